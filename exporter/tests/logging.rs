//! The real `spansink-exporter` binary's log stream as a log collector reads it (stderr on
//! a pipe): no terminal colour codes, fields as plain values, JSON lines when asked for; and
//! on a terminal (a pty from util-linux `script`), colour unless `NO_COLOR` is set.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STARTED: &str = "spansink exporter started";
const DRAINED: &str = "sink chain drained; exiting";

/// The exporter's stderr from start to exit: started on `config`, stopped with SIGTERM as
/// soon as it logged that it started.
fn run_until_started(config: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_spansink-exporter"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        // The outcome must not depend on the shell the tests run in.
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("SPANSINK_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spansink-exporter");
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.iter().any(|l: &String| l.contains(STARTED)) {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push(line),
            Err(_) => {
                stop(&mut child, "KILL");
                panic!("the exporter did not start; its log:\n{}", log.join("\n"));
            }
        }
    }
    stop(&mut child, "TERM");
    let status = wait(&mut child, Duration::from_secs(30));
    // The pipe closes at exit: the reader has seen every line.
    let _ = reader.join();
    log.extend(received.try_iter());
    let log = log.join("\n");
    assert_eq!(status, Some(0), "the exporter did not exit cleanly:\n{log}");
    log
}

fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
}

/// The exit code, or None (after killing it) if the exporter is still running at `timeout`.
fn wait(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn config(log_format: &str) -> String {
    // Port 0: the log says which port was bound. No HTTP receiver: its address is `off`.
    // Debug for sink building, so that a line with a string field is logged too.
    format!(
        "receivers:\n  grpc:\n    endpoint: 127.0.0.1:0\n  http:\n    endpoint: 127.0.0.1:0\n    enabled: false\n\
         telemetry:\n  endpoint: 127.0.0.1:0\n  log_format: {log_format}\n  \
         log_level: info,spansink_exporter::sinks::support=debug\n\
         sinks:\n  main:\n    blackhole: {{}}\n"
    )
}

/// The value of `name=` in a text log line, up to the next space.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split(' ').next()
}

fn line_with<'a>(log: &'a str, text: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?} in the log:\n{log}"))
}

#[test]
fn text_logs_on_a_pipe_have_no_colour_codes_and_plain_fields() {
    let log = run_until_started(&config("text"));
    assert!(
        !log.contains("\x1b["),
        "terminal colour codes in a log written to a pipe:\n{log:?}"
    );

    let started = line_with(&log, STARTED);
    let grpc = field(started, "grpc").unwrap_or_else(|| panic!("no grpc field: {started}"));
    let port = grpc
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("grpc is not a plain address: {started}"));
    assert_ne!(port, 0, "the bound port, not the configured 0: {started}");
    assert_eq!(field(started, "http"), Some("off"), "{started}");
    assert_eq!(field(started, "sinks"), Some("main"), "{started}");

    let built = line_with(&log, "built sink");
    assert_eq!(field(built, "backend"), Some("blackhole"), "{built}");

    let drained = line_with(&log, DRAINED);
    assert_eq!(field(drained, "dropped_spans"), Some("0"), "{drained}");
    assert_eq!(field(drained, "timed_out"), Some("false"), "{drained}");

    // No Debug formatting anywhere: Options, structs, quoted strings.
    for dump in ["Some(", "None", "{ ", "=\""] {
        assert!(!log.contains(dump), "{dump:?} in the log:\n{log}");
    }
}

#[test]
fn json_logs_stay_one_object_per_line_without_colour() {
    let log = run_until_started(&config("json"));
    assert!(
        !log.contains("\x1b["),
        "colour codes in JSON logs:\n{log:?}"
    );
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let started = events
        .iter()
        .find(|e| e["message"] == STARTED)
        .unwrap_or_else(|| panic!("no start event in:\n{log}"));
    let grpc = started["grpc"].as_str().unwrap_or_default();
    assert!(grpc.starts_with("127.0.0.1:"), "{started}");
    assert_eq!(started["http"], "off", "{started}");
    assert_eq!(started["level"], "INFO", "{started}");
    assert!(
        events.iter().any(|e| e["message"] == DRAINED),
        "no drain event in:\n{log}"
    );
}

/// The exporter's output when its stdin, stdout and stderr are a terminal (a pty made by
/// util-linux `script`), on a config whose gRPC port is taken, so that it logs an error and
/// exits by itself.
fn run_on_a_terminal(no_color: Option<&str>) -> String {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = taken.local_addr().expect("bound address");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    let config = format!(
        "receivers:\n  grpc:\n    endpoint: {addr}\n  http:\n    endpoint: 127.0.0.1:0\n    enabled: false\n\
         telemetry:\n  endpoint: 127.0.0.1:0\n\
         sinks:\n  main:\n    blackhole: {{}}\n"
    );
    std::fs::write(&path, config).expect("write config");
    let mut command = Command::new("script");
    // The paths reach the shell through the environment: no quoting to get wrong.
    command
        .args([
            "-q",
            "-e",
            "-c",
            "\"$EXPORTER\" run --config \"$CONFIG\"",
            "/dev/null",
        ])
        .env("SHELL", "/bin/sh")
        .env("EXPORTER", env!("CARGO_BIN_EXE_spansink-exporter"))
        .env("CONFIG", &path)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run `script` ({e}); install util-linux (Debian: bsdutils) for this test")
    });
    drop(taken);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        text.contains("exporter stopped with an error"),
        "no error line from the exporter on a terminal ({}):\n{text}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let coloured = run_on_a_terminal(None);
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal:\n{coloured:?}"
    );
    // no-color.org: an empty value does not count.
    let empty = run_on_a_terminal(Some(""));
    assert!(
        empty.contains("\x1b["),
        "NO_COLOR= (empty) turned colour off:\n{empty:?}"
    );
    let plain = run_on_a_terminal(Some("1"));
    assert!(
        !plain.contains("\x1b["),
        "colour despite NO_COLOR=1:\n{plain:?}"
    );
}
