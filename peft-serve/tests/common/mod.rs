//! What the server tests share: the real server on a free local port, and requests to it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The server process, stopped when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server() -> Server {
    let adapters = fixtures().join("adapters");
    start_server_with(
        "tiny-gpt2",
        &[
            ("prompt", adapters.join("prompt")),
            ("prefix", adapters.join("prefix")),
        ],
    )
}

/// The server on the fixture model `model` (named `tiny` in requests) with `adapters`.
pub fn start_server_with(model: &str, adapters: &[(&str, std::path::PathBuf)]) -> Server {
    start_server_with_flags(model, adapters, &[])
}

/// [`start_server_with`], with more flags.
pub fn start_server_with_flags(
    model: &str,
    adapters: &[(&str, std::path::PathBuf)],
    flags: &[&str],
) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peft-serve"));
    command.args(flags);
    command.arg("--model").arg(fixtures().join(model)).args([
        "--base-name",
        "tiny",
        "--port",
        "0",
        "--max-wait-ms",
        "30",
    ]);
    for (name, dir) in adapters {
        command
            .arg("--adapter")
            .arg(format!("{name}={}", dir.display()));
    }
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string();
    Server { child, base }
}

/// Status and JSON body of a request, whatever the status.
pub fn call(request: ureq::Request, body: Option<&str>) -> (u16, Value) {
    let response = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(body),
        None => request.call(),
    };
    let response = match response {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("transport error: {err}"),
    };
    let status = response.status();
    (status, response.into_json().unwrap())
}

pub fn complete(server: &Server, body: Value) -> (u16, Value) {
    call(
        ureq::post(&format!("{}/v1/completions", server.base)),
        Some(&body.to_string()),
    )
}
