//! `kestrel serve --response-cache` through the real binary: its flags are checked before
//! anything loads (each bad value names its flag), and a tiny model served with the in-memory
//! cache answers a repeated greedy question from it (the identity of the model is computed at
//! start-up). The cache itself is tested in crates/kestrel-server/tests/response_cache.rs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn kestrel(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kestrel"));
    c.args(args);
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_cache_flags_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--response-cache", "memcached://h:1"], "--response-cache"),
        (&["--response-cache", "rediss://h:1"], "TLS"),
        (
            &["--response-cache", "memory", "--response-cache-ttl", "0"],
            "--response-cache-ttl",
        ),
        (
            &[
                "--response-cache",
                "memory",
                "--response-cache-ttl",
                "1 week",
            ],
            "--response-cache-ttl",
        ),
        (&["--response-cache-ttl", "1h"], "need --response-cache"),
        (&["--response-cache-size", "1GiB"], "need --response-cache"),
        (
            &[
                "--response-cache",
                "redis://127.0.0.1:1/0",
                "--response-cache-size",
                "1GiB",
            ],
            "maxmemory",
        ),
        (
            &["--response-cache", "memory", "--response-cache-size", "0"],
            "--response-cache-size",
        ),
    ];
    for (flags, expected) in cases {
        let port = free_port().to_string();
        let out = kestrel(&["serve", "--model", "/nonexistent", "--port", &port])
            .args(*flags)
            .output()
            .expect("run kestrel");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        // Refused before loading: the missing model is never reached.
        assert!(!stderr.contains("/nonexistent"), "{flags:?}: {stderr}");
    }
}

fn fixtures_dir() -> PathBuf {
    std::env::var_os("KESTREL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/kestrel/fixtures")
        })
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange: status, `X-Kestrel-Cache`, body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, Option<String>, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let cache = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-kestrel-cache")
            .then(|| v.trim().to_string())
    });
    Some((status, cache, body.to_string()))
}

fn synth_tiny(out: &Path) {
    let tok = fixtures_dir().join("qwen3-tokenizer");
    assert!(
        tok.join("tokenizer.json").exists(),
        "missing {}: run scripts/fetch-fixtures.sh",
        tok.display()
    );
    let o = kestrel(&[
        "synth",
        "--size",
        "tiny",
        "--dtype",
        "f32",
        "--format",
        "safetensors",
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
    ])
    .output()
    .expect("run kestrel synth");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_repeated_question_is_answered_from_the_memory_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    synth_tiny(&model);
    let port = free_port();
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let _server = Server(
        kestrel(&[
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--kv-cache-memory",
            "64MiB",
            "--response-cache",
            "memory",
            "--response-cache-size",
            "1MiB",
            "--response-cache-ttl",
            "10m",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kestrel serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while http(port, "GET", "/ready", "").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let q = r#"{"messages": [{"role": "user", "content": "Hi"}], "temperature": 0,
        "max_tokens": 4, "ignore_eos": true}"#;
    let (status, cache, first) = http(port, "POST", "/v1/chat/completions", q).unwrap();
    assert_eq!((status, cache.as_deref()), (200, Some("miss")), "{first}");
    let (status, cache, second) = http(port, "POST", "/v1/chat/completions", q).unwrap();
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{second}");
    let content = |body: &str| {
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        v["choices"][0]["message"]["content"].clone()
    };
    assert_eq!(content(&first), content(&second));
    let (_, _, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("kestrel_response_cache_hits_total 1"),
        "{metrics}"
    );
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(log.contains("model digest for the response cache"), "{log}");
}
