//! CPU time, peak memory and bytes written to storage of a process, read from Linux
//! `/proc`: what the benchmark reports for the exporter under load.

use std::time::Duration;

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("unreadable VmHWM value")?;
    Ok(kib * 1024)
}

/// Bytes the process caused to be written to the storage layer so far (`write_bytes` of
/// `/proc/<pid>/io`: counted when a page is dirtied, so writes still in the page cache
/// count too; what a durable queue and a file sink cost the disk).
pub fn storage_write_bytes(pid: u32) -> Result<u64, String> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .map_err(|e| format!("/proc/{pid}/io: {e}"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no write_bytes in /proc/{pid}/io"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        // Burn a little CPU so the figure is not zero at 100 Hz tick resolution.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(peak_rss(pid).unwrap() > 1024 * 1024);
        assert!(cpu_time(u32::MAX).is_err());
        // Only readable and monotonic: a tmpfs temp dir has no storage layer to count.
        let written = storage_write_bytes(pid).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), vec![7u8; 1 << 20]).unwrap();
        assert!(storage_write_bytes(pid).unwrap() >= written);
        assert!(storage_write_bytes(u32::MAX).is_err());
    }
}
