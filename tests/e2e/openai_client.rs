//! The official OpenAI Python client against both shapes.
//!
//! Needs a Python with the `openai` package: `GROK2API_TEST_PYTHON`, or the
//! `.venv-test` that `scripts/test` creates.

use std::path::PathBuf;
use std::process::Command;

use crate::both_shapes;
use crate::harness::{API_KEY, Cluster, Shape};

fn python() -> PathBuf {
    std::env::var_os("GROK2API_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"))
}

async fn the_official_openai_client_works(shape: Shape) {
    let c = Cluster::start(shape, "openai").await;
    c.set_tokens(&["basic-token-1"], &[]).await;
    let prompt = "Hello from the OpenAI client";
    let answer = sim::answer_for(prompt);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_client.py");
    let python = python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test (it creates .venv-test with the openai package)",
        python.display()
    );
    let gateway = c.gateways.last().unwrap().clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&gateway, API_KEY, prompt, &answer.text, &answer.reasoning])
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for check in [
        "models: ok",
        "non-stream: ok",
        "stream: ok",
        "errors: ok",
        "auth: ok",
    ] {
        assert!(stdout.contains(check), "{check} missing in:\n{stdout}");
    }
}
both_shapes!(the_official_openai_client_works);
