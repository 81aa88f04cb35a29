//! `agentmesh bench summary`: every report.json under a folder in one
//! Markdown table, one row per run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// Reports at most this deep below the folder.
const DEPTH_MAX: usize = 4;

/// The table of every report under `root`, sorted by path, numbers in
/// paths by value (scale/50 before scale/100).
pub fn summary(root: &Path) -> anyhow::Result<String> {
    let mut paths = Vec::new();
    find_reports(root, DEPTH_MAX, &mut paths)
        .with_context(|| format!("cannot read {}", root.display()))?;
    if paths.is_empty() {
        anyhow::bail!(
            "no report.json below {}: run a bench script first",
            root.display()
        );
    }
    paths.sort_by_key(|path| natural_key(&path.to_string_lossy()));
    let mut table = String::from(
        "| run | nodes | topology | rate/agent | links up ms | delivered % | msgs/s | p50 ms | p95 ms | p99 ms | RSS/node MB | CPU %/node | CPU µs/msg | ok |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a report", path.display()))?;
        let run = path
            .parent()
            .and_then(|parent| parent.strip_prefix(root).ok())
            .map_or_else(
                || path.display().to_string(),
                |run| run.display().to_string(),
            );
        table += &row(&run, &report);
    }
    Ok(table)
}

fn row(run: &str, report: &Value) -> String {
    let number = |pointer: &str, digits: usize| {
        report
            .pointer(pointer)
            .and_then(Value::as_f64)
            .map_or("–".to_string(), |value| format!("{value:.digits$}"))
    };
    let sent = report
        .pointer("/messages/sent")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let delivered = report
        .pointer("/messages/delivered")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let delivered_percent = if sent > 0.0 {
        delivered * 100.0 / sent
    } else {
        100.0
    };
    let rate = match report.pointer("/config/rate").and_then(Value::as_f64) {
        Some(0.0) => "max".to_string(),
        Some(rate) => format!("{rate}"),
        None => "–".to_string(),
    };
    let rss_mb = report
        .pointer("/resources/rss_bytes_per_node")
        .and_then(Value::as_f64)
        .map_or("–".to_string(), |bytes| format!("{:.1}", bytes / 1e6));
    format!(
        "| {run} | {} | {} | {rate} | {} | {delivered_percent:.2} | {} | {} | {} | {} | {rss_mb} | {} | {} | {} |\n",
        number("/setup/nodes", 0),
        report.pointer("/config/topology").and_then(Value::as_str).unwrap_or("–"),
        number("/setup/setup_ms", 0),
        number("/throughput_msgs_per_s", 0),
        number("/latency_ms/p50", 2),
        number("/latency_ms/p95", 2),
        number("/latency_ms/p99", 2),
        number("/resources/cpu_percent_per_node", 2),
        number("/cpu_us_per_message", 0),
        if report["ok"].as_bool() == Some(true) { "yes" } else { "NO" },
    )
}

fn find_reports(folder: &Path, depth: usize, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        if path.is_dir() && depth > 0 {
            find_reports(&path, depth - 1, found)?;
        } else if path.file_name().is_some_and(|name| name == "report.json") {
            found.push(path);
        }
    }
    Ok(())
}

/// Sorts text with its digit runs compared as numbers.
fn natural_key(text: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut letters = String::new();
    let mut digits = String::new();
    for character in text.chars() {
        if character.is_ascii_digit() {
            digits.push(character);
        } else {
            if !digits.is_empty() {
                key.push((
                    std::mem::take(&mut letters),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            letters.push(character);
        }
    }
    key.push((letters, digits.parse().unwrap_or(0)));
    key
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_in_paths_sort_by_value() {
        let mut paths = vec![
            "scale/1000",
            "scale/50",
            "scale/100",
            "mesh-100",
            "scale/10",
        ];
        paths.sort_by_key(|path| super::natural_key(path));
        assert_eq!(
            paths,
            [
                "mesh-100",
                "scale/10",
                "scale/50",
                "scale/100",
                "scale/1000"
            ]
        );
    }
}
