//! A container's CPU and memory use read from its cgroup files, v1 or v2, as cAdvisor reads
//! them: cumulative CPU time, and the memory working set (usage minus inactive file pages,
//! which the kernel can reclaim at once). Pure: functions over the files' contents; the runtime
//! reads the files.

use super::Usage;

/// A field of a `key value` per line file (`memory.stat`, `cpu.stat`).
pub fn stat_field(stat: &str, key: &str) -> Option<u64> {
    stat.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// A file that holds one number (`memory.current`, `cpuacct.usage`).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// cgroup v1: `memory/…/memory.usage_in_bytes`, `memory/…/memory.stat` and
/// `cpuacct/…/cpuacct.usage` (nanoseconds); `None` when a number is missing or malformed.
pub fn usage_v1(memory_usage: &str, memory_stat: &str, cpuacct_usage: &str) -> Option<Usage> {
    let usage = single_value(memory_usage)?;
    // cAdvisor uses the hierarchical total (the same as `inactive_file` for a leaf cgroup).
    let inactive = stat_field(memory_stat, "total_inactive_file")
        .or_else(|| stat_field(memory_stat, "inactive_file"))
        .unwrap_or(0);
    Some(Usage {
        cpu_usage_nanos: single_value(cpuacct_usage)?,
        memory_bytes: usage.saturating_sub(inactive),
    })
}

/// cgroup v2: `memory.current`, `memory.stat` and `cpu.stat` (`usage_usec`).
pub fn usage_v2(memory_current: &str, memory_stat: &str, cpu_stat: &str) -> Option<Usage> {
    let current = single_value(memory_current)?;
    let inactive = stat_field(memory_stat, "inactive_file").unwrap_or(0);
    Some(Usage {
        cpu_usage_nanos: stat_field(cpu_stat, "usage_usec")?.saturating_mul(1000),
        memory_bytes: current.saturating_sub(inactive),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three files' contents and the (cpu ns, memory bytes) expected from them.
    type Case<'a> = (&'a str, &'a str, &'a str, Option<(u64, u64)>);

    #[test]
    fn cgroup_v1_files_give_cpu_and_working_set() {
        let stat = "cache 10\ninactive_file 100\ntotal_cache 10\ntotal_inactive_file 4096\n";
        let cases: &[Case] = &[
            ("20480\n", stat, "123456789\n", Some((123_456_789, 16_384))),
            // A leaf without hierarchical totals.
            ("20480", "inactive_file 480\n", "5", Some((5, 20_000))),
            // Inactive pages above usage (racy reads) never underflow.
            ("100", stat, "1", Some((1, 0))),
            ("", stat, "1", None),
            ("100", stat, "x", None),
        ];
        for (usage, stat, cpu, want) in cases {
            let got = usage_v1(usage, stat, cpu).map(|u| (u.cpu_usage_nanos, u.memory_bytes));
            assert_eq!(got, *want, "{usage:?} {cpu:?}");
        }
    }

    #[test]
    fn cgroup_v2_files_give_cpu_and_working_set() {
        let cpu = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n";
        let cases: &[Case] = &[
            (
                "1048576\n",
                "anon 4096\nfile 8192\ninactive_file 48576\n",
                cpu,
                Some((2_500_000, 1_000_000)),
            ),
            ("1000", "anon 1\n", cpu, Some((2_500_000, 1000))),
            ("1000", "", "user_usec 1\n", None),
            ("max", "", cpu, None),
        ];
        for (current, stat, cpu, want) in cases {
            let got = usage_v2(current, stat, cpu).map(|u| (u.cpu_usage_nanos, u.memory_bytes));
            assert_eq!(got, *want, "{current:?} {stat:?}");
        }
    }

    #[test]
    fn stat_fields_match_whole_keys() {
        let stat = "total_inactive_file 1\ninactive_file 2\nusage_usec 3\n";
        assert_eq!(stat_field(stat, "inactive_file"), Some(2));
        assert_eq!(stat_field(stat, "total_inactive_file"), Some(1));
        assert_eq!(stat_field(stat, "usage_usec"), Some(3));
        assert_eq!(stat_field(stat, "usage"), None);
    }
}
