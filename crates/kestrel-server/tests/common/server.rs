//! A real server on a loopback port for the tests that need TCP (load, slow clients, header
//! floods, faults): the tiny model on a fresh engine, served by `kestrel_server::serve`, plus a
//! raw HTTP/1.1 client for requests no well-behaved client would send.

use std::net::SocketAddr;
use std::sync::Arc;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::Backend;
use kestrel_engine::{start_engine, EngineConfig, EngineHandle, EngineMetrics, SamplingParams};
use kestrel_model::{ModelFiles, QwenModel};
use kestrel_server::{router, AppState, Model, ServerConfig};
use kestrel_text::Tokenizer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MODEL_NAME: &str = "tiny";

/// The tiny model on `backend`, with the real Qwen3 tokenizer.
pub fn engine_on<B: Backend>(backend: B, config: EngineConfig) -> (EngineHandle, Tokenizer) {
    let dir = super::tiny_model_dir();
    let files = ModelFiles::open(dir).expect("open tiny model");
    let model = QwenModel::load(&backend, files.config().clone(), files.weights())
        .expect("load tiny model");
    let handle = start_engine(backend, model, config).expect("start engine");
    (handle, Tokenizer::from_dir(dir).expect("tokenizer"))
}

pub fn engine(config: EngineConfig) -> (EngineHandle, Tokenizer) {
    engine_on(CpuBackend::new(), config)
}

/// The router over an engine, as `kestrel serve` builds it.
pub fn app(engine: &(EngineHandle, Tokenizer), config: ServerConfig) -> axum::Router {
    router(state(engine, config))
}

/// The server state over an engine, with the model ready.
pub fn state(engine: &(EngineHandle, Tokenizer), config: ServerConfig) -> Arc<AppState> {
    let (handle, tokenizer) = engine;
    let state = AppState::new(ServerConfig {
        served_model_name: MODEL_NAME.into(),
        ..config
    });
    state.set_model(
        Model::new(
            handle.clone(),
            tokenizer.clone(),
            SamplingParams::default(),
            &[],
        )
        .expect("model"),
    );
    state
}

pub struct Server {
    pub addr: SocketAddr,
    pub metrics: Arc<EngineMetrics>,
    pub tokenizer: Tokenizer,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Serves the engine on 127.0.0.1 (an ephemeral port) with `kestrel_server::serve`.
pub async fn spawn(engine: (EngineHandle, Tokenizer), config: ServerConfig) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let state = state(&engine, config);
    tokio::spawn(kestrel_server::serve(
        listener,
        state,
        std::time::Duration::from_secs(30),
    ));
    Server {
        addr,
        metrics: engine.0.metrics(),
        tokenizer: engine.1,
    }
}

/// An HTTP/1.1 response read to the end of the connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `request` (raw bytes, which should ask for `Connection: close`) and reads the answer
/// until the server closes. A server that stops reading early (a 413 or 431 before the whole
/// request arrived) may reset the write: the answer is read all the same.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the answer was sent (the request body was not read to its end).
            Err(_) if !buf.is_empty() => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    parse_response(&buf)
}

/// A `POST` with a JSON (or any) body and `Connection: close`.
pub fn post_bytes(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// The payload of a chunked body (as far as it goes).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = std::str::from_utf8(&raw[..eol]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
    out
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("SSE is UTF-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The process's peak resident set size in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
