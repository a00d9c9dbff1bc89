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
    let field = |name| status_field(&status, name);
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

/// Threads in `pid`, from `/proc/PID/status` alone: cheap enough to poll, unlike
/// [`sample`], which reads every mapping.
pub fn threads(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_field(&status, "Threads:"))
}

/// The number after `name` in the text of `/proc/PID/status` (0 when absent).
fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of `pid` (all threads) and of its children, running or already reaped. Children
/// count because a subject may fork per connection (the socat chain does); water-pt and
/// obfs4proxy have none, so for them this is their own utime + stime.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let ticks = stat(pid)?.ticks() + children(pid).iter().map(Stat::ticks).sum::<u64>();
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The fields of `/proc/PID/stat` the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime, stime, cutime, cstime (the last two: reaped children), in clock ticks.
    times: [u64; 4],
}

impl Stat {
    fn ticks(&self) -> u64 {
        self.times.iter().sum()
    }
}

fn stat(pid: u32) -> io::Result<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// Parses one `/proc/PID/stat` line.
fn parse_stat(text: &str) -> io::Result<Stat> {
    // The command name (field 2) is in parentheses and may itself contain spaces or ')': the
    // numeric fields start after the *last* ')'. After it come field 3 (state) onwards, so
    // ppid (field 4) is at offset 1 and utime, stime, cutime, cstime (fields 14-17) at 11-14.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    Ok(Stat {
        ppid: u32::try_from(field(1)?).map_err(io::Error::other)?,
        times: [field(11)?, field(12)?, field(13)?, field(14)?],
    })
}

/// The live children of `pid` (processes that exit meanwhile are skipped).
fn children(pid: u32) -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).ok())
        .filter(|s| s.ppid == pid)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_follow_the_last_parenthesis() {
        let line = "4242 (a) b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 17);
        assert_eq!(s.times, [250, 50, 7, 3]);
        assert_eq!(s.ticks(), 310);
        assert!(parse_stat("4242 (cut short) S 17").is_err());
    }

    #[test]
    fn own_process_is_found_as_a_child_of_its_parent() {
        let me = std::process::id();
        let parent = stat(me).unwrap().ppid;
        assert!(children(parent).iter().any(|s| s.ppid == parent));
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }
}
