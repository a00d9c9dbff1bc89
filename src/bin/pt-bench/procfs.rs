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
    Ok(ticks_to_secs(ticks))
}

/// CPU seconds of `pid`'s own threads, without its children: the benchmark's own load, whose
/// children are the transports being measured.
pub fn own_cpu_seconds(pid: u32) -> io::Result<f64> {
    let [utime, stime, ..] = stat(pid)?.times;
    Ok(ticks_to_secs(utime + stime))
}

fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// The CPU seconds some processes spend from the moment the meter starts, each process read
/// with `read` ([`cpu_seconds`] or [`own_cpu_seconds`]).
pub struct CpuMeter {
    pids: Vec<u32>,
    read: fn(u32) -> io::Result<f64>,
    start: Option<f64>,
}

impl CpuMeter {
    pub fn start(pids: &[u32], read: fn(u32) -> io::Result<f64>) -> Self {
        let mut meter = Self {
            pids: pids.to_vec(),
            read,
            start: None,
        };
        meter.start = meter.now();
        meter
    }

    /// Seconds spent since the start. `None` with no processes, or when one could not be read
    /// at either end: a process that is gone makes the figure meaningless (a transport that
    /// died mid-test).
    pub fn spent(&self) -> Option<f64> {
        Some(self.now()? - self.start?)
    }

    fn now(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids
            .iter()
            .map(|&p| (self.read)(p))
            .sum::<io::Result<f64>>()
            .ok()
    }
}

/// The whole machine's CPU time so far, summed over every core, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineCpu {
    /// Ticks spent running anything (everything but idle and iowait).
    pub busy: u64,
    /// All ticks, idle included.
    pub total: u64,
}

impl MachineCpu {
    /// The share of the machine that was busy between `earlier` and `self`.
    pub fn busy_since(&self, earlier: &MachineCpu) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// Reads [`MachineCpu`] from `/proc/stat`.
pub fn machine_cpu() -> io::Result<MachineCpu> {
    parse_machine_cpu(&std::fs::read_to_string("/proc/stat")?)
}

/// Parses the first line of `/proc/stat`: `cpu  user nice system idle iowait irq softirq steal
/// guest guest_nice`. guest and guest_nice are already inside user and nice, so they are not
/// added again; kernels older than the later columns just have fewer of them.
fn parse_machine_cpu(text: &str) -> io::Result<MachineCpu> {
    let bad = || io::Error::other("malformed /proc/stat");
    let line = text.lines().next().ok_or_else(bad)?;
    let mut words = line.split_whitespace();
    if words.next() != Some("cpu") {
        return Err(bad());
    }
    let ticks = words
        .take(8)
        .map(|w| w.parse::<u64>().map_err(|_| bad()))
        .collect::<io::Result<Vec<u64>>>()?;
    if ticks.len() < 4 {
        return Err(bad());
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks.get(4).copied().unwrap_or(0);
    Ok(MachineCpu {
        busy: total - idle,
        total,
    })
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
    fn machine_cpu_counts_everything_but_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 3 7 2 40 0\ncpu0 50 2 25 500 10 1 3 1 20 0\n";
        let m = parse_machine_cpu(text).unwrap();
        // guest (40) is already inside user and is not counted twice.
        assert_eq!(m.total, 100 + 5 + 50 + 1000 + 20 + 3 + 7 + 2);
        assert_eq!(m.busy, 100 + 5 + 50 + 3 + 7 + 2);
        // An old kernel's four columns are enough.
        let old = parse_machine_cpu("cpu 10 0 10 80\n").unwrap();
        assert_eq!((old.busy, old.total), (20, 100));
        for bad in ["", "cpu0 1 2 3 4\n", "cpu 1 2 3\n", "cpu 1 x 3 4\n"] {
            assert!(parse_machine_cpu(bad).is_err(), "{bad:?}");
        }
        let later = MachineCpu {
            busy: m.busy + 30,
            total: m.total + 40,
        };
        assert_eq!(later.busy_since(&m), Some(0.75));
        assert_eq!(m.busy_since(&later), None);
        assert_eq!(m.busy_since(&m), None);
    }

    #[test]
    fn own_cpu_leaves_out_children() {
        let me = std::process::id();
        let own = own_cpu_seconds(me).unwrap();
        assert!(own >= 0.0 && own <= cpu_seconds(me).unwrap());
        assert!(machine_cpu().unwrap().total > 0);
    }

    #[test]
    fn cpu_meter_reads_nothing_without_live_processes() {
        let me = std::process::id();
        let spent = CpuMeter::start(&[me], own_cpu_seconds).spent().unwrap();
        assert!(spent >= 0.0);
        assert_eq!(CpuMeter::start(&[], cpu_seconds).spent(), None);
        // PIDs stop at pid_max (at most 2^22), so this one is never a process.
        assert_eq!(CpuMeter::start(&[me, u32::MAX], cpu_seconds).spent(), None);
    }

    #[test]
    fn own_process_is_found_as_a_child_of_its_parent() {
        let me = std::process::id();
        let parent = stat(me).unwrap().ppid;
        assert!(children(parent).iter().any(|s| s.ppid == parent));
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }
}
