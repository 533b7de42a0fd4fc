//! A few-second run of the benchmark harness in its smallest configuration, against the
//! debug `grok2api` binary of the same target directory, on both shapes. It checks the report
//! is complete and every stream arrived intact; it asserts no timings.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `<target>/debug/grok2api`, next to this test's own `deps/` directory.
fn grok2api_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps layout");
    profile_dir.join("grok2api")
}

#[test]
fn quick_run_reports_every_section_and_intact_streams() {
    let binary = grok2api_binary();
    assert!(
        binary.exists(),
        "{} is missing: build it first (cargo build -p grok2api)",
        binary.display()
    );
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-smoke-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    let json = tmp.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_grok2api-bench"))
        .arg("--quick")
        .arg("--binary")
        .arg(&binary)
        .arg("--json")
        .arg(&json)
        .arg("--work-dir")
        .arg(tmp.join("runs"))
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "harness failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["stream_integrity_ok"], true, "{stdout}");
    let shapes = report["shapes"].as_array().unwrap();
    let names: Vec<&str> = shapes
        .iter()
        .map(|s| s["shape"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["embedded", "distributed"]);
    for s in shapes {
        for section in [
            "latency",
            "streaming",
            "throughput",
            "memory",
            "rss_under_load",
        ] {
            assert!(!s[section].is_null(), "{section} missing in {s}");
        }
        assert_eq!(s["latency"]["errors"], 0, "{s}");
        assert!(s["latency"]["requests_each"].as_u64().unwrap() > 0);
        assert!(s["streaming"]["requests_each"].as_u64().unwrap() > 0);
        assert_eq!(s["throughput"].as_array().unwrap().len(), 2);
        // Requests at each level ran; failures under load are reported, not asserted here.
        for level in s["throughput"].as_array().unwrap() {
            let ran =
                level["product_ok"].as_u64().unwrap() + level["product_errors"].as_u64().unwrap();
            assert!(ran > 0, "{level}");
            assert!(level["baseline_ok"].as_u64().unwrap() > 0, "{level}");
        }
        assert!(s["memory"]["idle_opened"].as_u64().unwrap() > 0, "{s}");
        assert!(s["rss_under_load"]["gateway_max_kib"].as_u64().unwrap() > 0);
    }
    let worker_rss_under_load = &shapes[1]["rss_under_load"]["worker_max_kib"];
    assert!(
        worker_rss_under_load.as_u64().unwrap() > 0,
        "worker RSS sampled"
    );
    let intake = report["intake"].as_array().unwrap();
    let queues: Vec<&str> = intake
        .iter()
        .map(|i| i["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["in-process", "rabbitmq"]);
    for i in intake {
        assert_eq!(i["accepted"], i["jobs"], "{i}");
    }
    for heading in [
        "## embedded",
        "## distributed",
        "## Job intake",
        "## Targets",
    ] {
        assert!(stdout.contains(heading), "{heading} missing from\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
