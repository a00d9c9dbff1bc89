//! What the benchmark reads about the transport processes from `/proc`.
//!
//! Everything is process-wide: water-pt runs one thread per connection inside one process, and
//! `/proc/PID/stat` and `/proc/PID/status` already sum over all of a process's threads, so one
//! PID per side is the whole cost of that side.

use std::io;

/// One look at a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Threads in the process.
    pub threads: u64,
    /// Memory mappings (lines of `/proc/PID/maps`); `vm.max_map_count` caps this.
    pub maps: u64,
    /// Open file descriptors; RLIMIT_NOFILE caps this.
    pub fds: u64,
}

/// Reads [`Sample`] for `pid`.
pub fn sample(pid: u32) -> io::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let maps = std::fs::read(format!("/proc/{pid}/maps"))?
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;
    Ok(Sample {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        maps,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
    })
}

/// utime + stime of `pid` (all threads), seconds.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may itself contain spaces or ')': the
    // numeric fields start after the *last* ')'. After it come field 3 (state) onwards, so
    // utime (field 14) and stime (field 15) are at offsets 11 and 12.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Total CPU seconds of several processes; a process that is gone counts as an error, since a
/// transport that died mid-test makes the figure meaningless.
pub fn cpu_total(pids: &[u32]) -> io::Result<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// A kernel limit from `/proc/sys`, if readable.
pub fn sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
}
