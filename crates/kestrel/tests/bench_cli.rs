//! `kestrel bench` through the real binary, with no server: the flags are checked, an endpoint
//! that refuses connections ends the run quickly, each failure is counted and written to the
//! JSON and HTML reports, and the exit status says that nothing succeeded. The timing
//! measurements themselves are tested against a scripted server in crates/kestrel-bench/tests.

use std::process::Command;

fn kestrel_bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the kestrel binary runs")
}

fn closed_port() -> u16 {
    // Bind, read the port, drop: nothing listens there any more.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn refused_connections_are_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let html = dir.path().join("report.html");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = kestrel_bench(&[
        "--base-url",
        &url,
        "--model",
        "m",
        "--concurrency",
        "1,2",
        "--num-prompts",
        "2,3",
        "--class",
        "short",
        "--timeout-s",
        "5",
        "--no-progress",
        "--output",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "every request failed: {stderr}");
    assert!(stderr.contains("every request failed"), "{stderr}");
    assert!(
        stdout.contains("- concurrency 1: 2 failed (connect: 2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- concurrency 2: 3 failed (connect: 3)"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["spec"]["max_concurrency"], 2);
    assert_eq!(runs[1]["requests"].as_array().unwrap().len(), 3);
    assert_eq!(runs[1]["requests"][0]["error"], "connect");
    assert_eq!(runs[1]["metrics"]["errors"]["connect"], 3);
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
}

#[test]
fn bad_flags_are_refused_before_sending() {
    let out = kestrel_bench(&[
        "--model",
        "m",
        "--concurrency",
        "1,4,16",
        "--num-prompts",
        "1,2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--num-prompts has 2 values"));

    let out = kestrel_bench(&["--model", "m", "--extra-body", "[1]"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a JSON object"));

    let out = kestrel_bench(&["--model", "m", "--request-rate", "fast"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--request-rate"));
}
