//! `powerhose-bench --sweep`: a short callers sweep of the echo plugin
//! writes its chart and its JSON, and a bad spec is a one-line error.

mod common;

use std::process::Command;

use common::TestDir;

const BENCH: &str = env!("CARGO_BIN_EXE_powerhose-bench");

fn bench(dir: &TestDir, args: &[&str]) -> std::process::Output {
    Command::new(BENCH)
        .args(args)
        // The bench cluster's sockets and the floor's go in the test's directory.
        .env("POWERHOSE_RUNTIME_DIR", dir.path())
        .output()
        .expect("running powerhose-bench")
}

#[test]
fn a_callers_sweep_writes_its_chart_and_its_points() {
    let dir = TestDir::new();
    let report = dir.path().join("report");
    let echo = common::plugin("echo");
    let out = bench(
        &dir,
        &[
            "--plugin",
            echo.to_str().unwrap(),
            "--sweep",
            "callers=1,2",
            "--duration",
            "0.5",
            "--workers",
            "2",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "powerhose-bench failed: {stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("CALLERS") && table.contains("floor: relay"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("sweep-callers.json")).unwrap()).unwrap();
    assert_eq!(json["dimension"], "callers");
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{json:#}");
    for (point, callers) in points.iter().zip([1, 2]) {
        assert_eq!(point["value"], callers);
        for figure in ["jobs_per_s", "in_process_jobs_per_s", "floor_jobs_per_s"] {
            assert!(point[figure].as_f64().unwrap() > 0.0, "{figure} at {callers}: {point:#}");
        }
        assert!(point["latency"]["p50_us"].as_f64().unwrap() > 0.0, "{point:#}");
        assert_eq!(point["errors"], 0);
    }
    let env = &json["environment"];
    assert!(env["cpus"].as_u64().unwrap() >= 1 && env["plugin"].as_str().unwrap().starts_with("echo"), "{env:#}");
    assert_eq!((&env["wire"], &env["seconds_per_measurement"]), (&"unix".into(), &0.5.into()));
    assert!(env["date"].as_str().unwrap().ends_with('Z'), "{env:#}");
    // The callers' floor is the relay with its workers running the job.
    assert!(env["floor"].as_str().unwrap().contains("workers running the job"), "{env:#}");

    let svg = std::fs::read_to_string(report.join("sweep-callers.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Five series (powerhose, in-process, floor; p50, p99), drawn as polylines.
    assert!(svg.matches("<polyline").count() >= 5, "{svg}");
    for legend in ["powerhose", "p50", "p99"] {
        assert!(svg.contains(&format!(">\n{legend}\n</text>")), "no legend {legend:?}");
    }
    assert!(svg.contains(">\nin-process") && svg.contains(">\nfloor: relay"), "no reference legends");
}

#[test]
fn a_bad_sweep_is_one_line_and_exit_2() {
    let dir = TestDir::new();
    let echo = common::plugin("echo");
    for spec in ["threads=1,2", "callers=1,x", "callers=0"] {
        let out = bench(&dir, &["--plugin", echo.to_str().unwrap(), "--sweep", spec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{spec}: {stderr}");
        assert!(stderr.starts_with("powerhose-bench: error: --sweep"), "{stderr}");
    }
}
