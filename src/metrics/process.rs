//! The standard `process_*` metrics (CPU, memory, file descriptors, start time, threads), read
//! from `/proc/self` when `/metrics` is scraped: nothing is measured per request.
//!
//! Linux only (what bentogate's image and pods run); elsewhere the family is simply empty. Hand
//! rolled rather than the prometheus crate's `process` feature so the build takes no new
//! dependency (procfs) for six numbers.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, Opts};

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ: fixed at 100 on Linux's ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `/proc/self` on each scrape into the `process_*` family.
pub(super) struct ProcessCollector {
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    descs: Vec<Desc>,
}

/// What one read of `/proc/self` found; a field is `None` when it could not be read.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
    threads: Option<i64>,
}

impl ProcessCollector {
    /// The collector (fails only on an invalid metric name: a bug).
    pub(super) fn new() -> Result<ProcessCollector, prometheus::Error> {
        fn opts(name: &str, help: &str) -> Opts {
            Opts::new(name, help)
        }
        let cpu = Counter::with_opts(opts(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
        ))?;
        let gauge = |name: &str, help: &str| IntGauge::with_opts(opts(name, help));
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
        )?;
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
        )?;
        let open_fds = gauge("process_open_fds", "Number of open file descriptors")?;
        let max_fds = gauge("process_max_fds", "Maximum number of open file descriptors")?;
        let threads = gauge("process_threads", "Number of OS threads in the process")?;
        let start_time = Gauge::with_opts(opts(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
        ))?;
        let mut descs = Vec::new();
        descs.extend(cpu.desc().into_iter().cloned());
        for g in [&resident, &virtual_memory, &open_fds, &max_fds, &threads] {
            descs.extend(g.desc().into_iter().cloned());
        }
        descs.extend(start_time.desc().into_iter().cloned());
        Ok(ProcessCollector {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            threads,
            descs,
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = sample();
        let mut out = Vec::new();
        if let Some(total) = s.cpu_seconds {
            let delta = total - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            out.extend(self.cpu.collect());
        }
        for (gauge, value) in [
            (&self.resident, s.resident_bytes),
            (&self.virtual_memory, s.virtual_bytes),
            (&self.open_fds, s.open_fds),
            (&self.max_fds, s.max_fds),
            (&self.threads, s.threads),
        ] {
            if let Some(v) = value {
                gauge.set(v);
                out.extend(gauge.collect());
            }
        }
        if let Some(t) = s.start_time_seconds {
            self.start_time.set(t);
            out.extend(self.start_time.collect());
        }
        out
    }
}

fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut s = Sample::default();
    if let Some(stat) = read("/proc/self/stat") {
        let boot = read("/proc/stat").and_then(|t| boot_time(&t));
        parse_stat(&stat, boot, &mut s);
    }
    s.resident_bytes = read("/proc/self/status").and_then(|t| resident_bytes(&t));
    s.max_fds = read("/proc/self/limits").and_then(|t| max_open_files(&t));
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    s
}

/// `/proc/self/stat`: `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so the
/// fields are counted after the last `)` (proc(5): utime 14, stime 15, num_threads 20,
/// starttime 22, vsize 23).
fn parse_stat(stat: &str, boot_time: Option<f64>, s: &mut Sample) {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    // Field 3 (state) is at index 0 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        s.cpu_seconds = Some((user + system) as f64 / TICKS_PER_SECOND);
    }
    s.threads = field(20).map(|v| v as i64);
    s.virtual_bytes = field(23).map(|v| v as i64);
    if let (Some(start), Some(boot)) = (field(22), boot_time) {
        s.start_time_seconds = Some(boot + start as f64 / TICKS_PER_SECOND);
    }
}

/// `btime` in `/proc/stat`: the boot time in Unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:   1234 kB` in `/proc/self/status`.
fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // comm with a space and a parenthesis, as a thread may name itself.
        let stat = "42 (tokio (1) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 300 18446744073709551615";
        let mut s = Sample::default();
        parse_stat(stat, Some(1_700_000_000.0), &mut s);
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(s.virtual_bytes, Some(123_456_789));
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            resident_bytes("Name: x\nVmRSS:\t  2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(
            max_open_files(
                "Max open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
    }

    #[test]
    fn this_process_is_measured() {
        let s = sample();
        if cfg!(target_os = "linux") {
            assert!(s.cpu_seconds.is_some() && s.resident_bytes.is_some_and(|r| r > 0));
            assert!(s.open_fds.is_some_and(|n| n > 0) && s.max_fds.is_some());
            assert!(s.start_time_seconds.is_some_and(|t| t > 1.0e9));
        }
    }
}
