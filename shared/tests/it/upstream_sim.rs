//! The upstream client against the simulator, over both chat transports: exact answers,
//! every fault mode classified, statsig modes, cancellation by drop, and timeouts.

use std::time::Duration;

use futures::StreamExt;
use shared::Secret;
use shared::config::{ChatTransport, Config, StatsigMode, UpstreamConfig};
use shared::upstream::{
    ChatChunk, ChatRequest, ChatStream, UpstreamClient, UpstreamError, UpstreamErrorKind,
};
use sim::{SimConfig, SimHandle, answer_for};

/// Simulator timing for these tests: instant answers, a short "slow" pace.
fn sim_config() -> SimConfig {
    SimConfig {
        slow_frame_delay_ms: 20,
        ..SimConfig::default()
    }
}

async fn spawn_sim(config: SimConfig) -> SimHandle {
    sim::spawn(config).await.expect("simulator starts")
}

fn upstream_config(sim: &SimHandle, transport: ChatTransport) -> UpstreamConfig {
    let mut config = Config::defaults().upstream;
    config.base_url = sim.base_url();
    config.ws_url = sim.ws_url();
    config.chat_transport = transport;
    config.connect_timeout_secs = 5;
    config.stream_idle_timeout_secs = 5;
    config
}

fn client(config: &UpstreamConfig) -> UpstreamClient {
    UpstreamClient::new(config).expect("client builds")
}

/// A token unique to one test, carrying the simulator's fault markers in its label.
fn token(label: &str) -> Secret {
    Secret::from(format!("{label}-{}", uuid::Uuid::new_v4().simple()))
}

fn request(message: &str) -> ChatRequest {
    ChatRequest {
        mode: "fast".into(),
        message: message.into(),
        temperature: 0.8,
        top_p: 0.95,
        reasoning_effort: None,
        file_ids: Vec::new(),
        temporary: true,
        disable_memory: true,
    }
}

/// Everything one answer stream produced.
#[derive(Debug, Default)]
struct Answer {
    started_first: bool,
    reasoning: String,
    text: String,
    done: bool,
    error: Option<UpstreamError>,
}

async fn drain(mut stream: ChatStream) -> Answer {
    let mut answer = Answer::default();
    let mut first = true;
    while let Some(item) = stream.next().await {
        assert!(
            !answer.done && answer.error.is_none(),
            "nothing may follow the end"
        );
        match item {
            Ok(ChatChunk::Started { .. }) => answer.started_first = first,
            Ok(ChatChunk::Reasoning(r)) => answer.reasoning.push_str(&r),
            Ok(ChatChunk::Text(t)) => answer.text.push_str(&t),
            Ok(ChatChunk::Citation { .. }) => {}
            Ok(ChatChunk::Done { .. }) => answer.done = true,
            Err(e) => answer.error = Some(e),
        }
        first = false;
    }
    answer
}

async fn ask(
    client: &UpstreamClient,
    token: &Secret,
    message: &str,
) -> Result<Answer, UpstreamError> {
    let stream = client.chat(token, &request(message)).await?;
    Ok(drain(stream).await)
}

/// Runs one scenario for each transport.
macro_rules! both_transports {
    ($scenario:ident, $ws:ident, $rest:ident) => {
        #[tokio::test]
        async fn $ws() {
            $scenario(ChatTransport::Ws).await;
        }

        #[tokio::test]
        async fn $rest() {
            $scenario(ChatTransport::Rest).await;
        }
    };
}

async fn exact_answers(transport: ChatTransport) {
    let sim = spawn_sim(sim_config()).await;
    let client = client(&upstream_config(&sim, transport));
    let token = token("plain");
    for message in ["What is 2+2?", "héllo  wörld\n漢字 [[words:40]]"] {
        let answer = ask(&client, &token, message).await.expect("chat starts");
        let expected = answer_for(message);
        assert!(answer.started_first, "Started comes first");
        assert!(answer.done, "{:?}", answer.error);
        assert_eq!(answer.reasoning, expected.reasoning);
        assert_eq!(answer.text, expected.text);
    }
    let stats = sim.stats().await;
    let mine = &stats.tokens[token.expose()];
    assert_eq!((mine.calls, mine.in_flight), (2, 0));
    assert_eq!(mine.last_mode.as_deref(), Some("fast"));
}
both_transports!(
    exact_answers,
    ws_answers_match_the_simulator,
    rest_answers_match_the_simulator
);

/// The error `chat` itself returns for a token carrying `marker`.
async fn refusal(transport: ChatTransport, marker: &str) -> UpstreamError {
    let sim = spawn_sim(sim_config()).await;
    let client = client(&upstream_config(&sim, transport));
    let token = token(marker);
    let error = match client.chat(&token, &request("hi")).await {
        Ok(stream) => panic!(
            "{marker}: expected a refusal, got {:?}",
            drain(stream).await
        ),
        Err(error) => error,
    };
    assert!(
        !error.message.contains(token.expose()) && !error.to_string().contains(token.expose()),
        "the token leaked into {error}"
    );
    assert_eq!(
        sim.stats().await.total_calls,
        0,
        "{marker} reached the answer"
    );
    error
}

async fn refusals_are_classified(transport: ChatTransport) {
    let limited = refusal(transport, "fault-429").await;
    assert_eq!(
        limited.kind,
        UpstreamErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(limited.status, Some(429));
    assert_eq!(
        refusal(transport, "fault-401").await.kind,
        UpstreamErrorKind::Unauthorized
    );
    let challenged = refusal(transport, "fault-403").await;
    assert_eq!(challenged.kind, UpstreamErrorKind::AntiBot);
    assert!(!challenged.message.contains("<"), "{}", challenged.message);
    assert_eq!(
        refusal(transport, "fault-blocked").await.kind,
        UpstreamErrorKind::Blocked
    );
}
both_transports!(
    refusals_are_classified,
    ws_refusals_are_classified,
    rest_refusals_are_classified
);

async fn stream_faults(transport: ChatTransport) {
    let sim = spawn_sim(sim_config()).await;
    let client = client(&upstream_config(&sim, transport));
    let message = "tell me [[words:12]]";
    let expected = answer_for(message);

    let slow = ask(&client, &token("fault-slow"), message).await.unwrap();
    assert!(slow.done, "{:?}", slow.error);
    assert_eq!(
        (slow.reasoning, slow.text),
        (expected.reasoning.clone(), expected.text.clone())
    );

    let malformed = ask(&client, &token("fault-malformed"), message)
        .await
        .unwrap();
    assert!(malformed.done, "{:?}", malformed.error);
    assert_eq!(malformed.reasoning, expected.reasoning);
    assert_eq!(malformed.text, expected.text);

    let cut = ask(&client, &token("fault-cut"), message).await.unwrap();
    assert!(!cut.done);
    assert_eq!(
        cut.error.map(|e| e.kind),
        Some(UpstreamErrorKind::Transient)
    );
    assert!(expected.text.starts_with(&cut.text) && cut.text.len() < expected.text.len());

    let empty = ask(&client, &token("fault-empty"), message).await.unwrap();
    assert!(empty.started_first && empty.done, "{:?}", empty.error);
    assert_eq!((empty.reasoning.as_str(), empty.text.as_str()), ("", ""));
}
both_transports!(
    stream_faults,
    ws_stream_faults_are_classified,
    rest_stream_faults_are_classified
);

async fn stall_hits_the_idle_timeout(transport: ChatTransport) {
    let sim = spawn_sim(sim_config()).await;
    let mut config = upstream_config(&sim, transport);
    config.stream_idle_timeout_secs = 1;
    let client = client(&config);
    let answer = ask(&client, &token("fault-stall"), "hello").await.unwrap();
    assert!(answer.started_first && !answer.done);
    assert!(
        !answer.reasoning.is_empty(),
        "the first frames arrive before the stall"
    );
    assert_eq!(
        answer.error.map(|e| e.kind),
        Some(UpstreamErrorKind::Timeout)
    );
}
both_transports!(
    stall_hits_the_idle_timeout,
    ws_stall_times_out,
    rest_stall_times_out
);

/// Waits (bounded) until the simulator sees no call of `token` in flight.
async fn settled(sim: &SimHandle, token: &Secret) -> u64 {
    let mut in_flight = u64::MAX;
    for _ in 0..100 {
        in_flight = sim.stats().await.tokens[token.expose()].in_flight;
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    in_flight
}

async fn drop_ends_the_call(transport: ChatTransport) {
    let sim = spawn_sim(sim_config()).await;
    let client = client(&upstream_config(&sim, transport));
    let token = token("fault-slow");
    // 20 ms per frame and 500 words: far longer than this test waits.
    let mut stream = client
        .chat(&token, &request("[[words:500]]"))
        .await
        .unwrap();
    for _ in 0..4 {
        assert!(matches!(stream.next().await, Some(Ok(_))));
    }
    assert_eq!(sim.stats().await.tokens[token.expose()].in_flight, 1);
    drop(stream);
    assert_eq!(
        settled(&sim, &token).await,
        0,
        "the call still runs at the simulator"
    );
}
both_transports!(
    drop_ends_the_call,
    ws_drop_ends_the_call,
    rest_drop_ends_the_call
);

#[tokio::test]
async fn ws_first_frame_timeout_is_a_timeout() {
    let sim = spawn_sim(SimConfig {
        ttft_ms: 3_000,
        ..sim_config()
    })
    .await;
    let mut config = upstream_config(&sim, ChatTransport::Ws);
    config.connect_timeout_secs = 1;
    let error = client(&config)
        .chat(&token("plain"), &request("hi"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(error.kind, UpstreamErrorKind::Timeout);
}

async fn rest_answer_with(config: UpstreamConfig) -> Result<Answer, UpstreamError> {
    ask(&client(&config), &token("plain"), "statsig?").await
}

#[tokio::test]
async fn rest_statsig_modes() {
    let sim = spawn_sim(sim_config()).await;
    let expected = answer_for("statsig?").text;

    let fallback = upstream_config(&sim, ChatTransport::Rest);
    assert_eq!(fallback.statsig_mode, StatsigMode::Fallback);
    assert_eq!(
        rest_answer_with(fallback.clone()).await.unwrap().text,
        expected
    );

    let mut signer = fallback.clone();
    signer.statsig_mode = StatsigMode::Signer;
    signer.statsig_signer_url = format!("{}/sim/sign", sim.base_url());
    assert_eq!(
        rest_answer_with(signer.clone()).await.unwrap().text,
        expected
    );

    // A signer that does not answer: the fallback value still gets through.
    let mut broken_signer = signer.clone();
    broken_signer.statsig_signer_url = format!("{}/no-such-signer", sim.base_url());
    assert_eq!(
        rest_answer_with(broken_signer).await.unwrap().text,
        expected
    );

    let mut current = fallback.clone();
    current.statsig_mode = StatsigMode::Fixed;
    current.statsig_value = Secret::from(base64_of(
        "x1:TypeError: Cannot read properties of undefined (reading 'abcdefghij')",
    ));
    assert_eq!(rest_answer_with(current).await.unwrap().text, expected);

    let mut stale = fallback;
    stale.statsig_mode = StatsigMode::Fixed;
    stale.statsig_value = Secret::from(
        "ZTpUeXBlRXJyb3I6IENhbm5vdCByZWFkIHByb3BlcnRpZXMgb2YgdW5kZWZpbmVkIChyZWFkaW5nICdjaGlsZE5vZGVzJyk=",
    );
    let error = rest_answer_with(stale).await.map(|_| ()).unwrap_err();
    assert_eq!(error.kind, UpstreamErrorKind::AntiBot);
    assert_eq!(error.status, Some(403));
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn user_id_comes_from_the_session() {
    let sim = spawn_sim(sim_config()).await;
    let client = client(&upstream_config(&sim, ChatTransport::Ws));
    let token = token("plain");
    let id = client.user_id(&token).await.unwrap();
    assert_eq!(id, sim::user_id_for(token.expose()));
    let prefixed = Secret::from(format!("sso={}", token.expose()));
    assert_eq!(client.user_id(&prefixed).await.unwrap(), id);
    assert_eq!(
        client
            .user_id(&self::token("fault-401"))
            .await
            .unwrap_err()
            .kind,
        UpstreamErrorKind::Unauthorized
    );
    assert_eq!(
        client
            .user_id(&self::token("fault-blocked"))
            .await
            .unwrap_err()
            .kind,
        UpstreamErrorKind::Blocked
    );
}

/// A stand-in for the upload endpoint (the simulator does not serve it): checks the
/// multipart shape and the cookie, refuses tokens labelled `limited` with a 429.
async fn upload_endpoint(
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let cookie = headers["cookie"].to_str().unwrap_or_default().to_owned();
    if cookie.contains("limited") {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "{}").into_response();
    }
    let content_type = headers["content-type"].to_str().unwrap_or_default();
    let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let expected = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nfile body\r\n--{boundary}--\r\n"
    );
    let authenticated = cookie.starts_with("sso=") && cookie.contains("; sso-rw=");
    if body != expected.as_bytes() || !authenticated || headers.contains_key("x-statsig-id") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    axum::Json(serde_json::json!({
        "uploadId": "up-1",
        "terminalError": null,
        "fileMetadata": {"fileMetadataId": "fm-1", "fileId": "f-1", "fileUri": "users/u/f-1/content"},
    }))
    .into_response()
}

#[tokio::test]
async fn upload_returns_the_file_metadata_id() {
    let app = axum::Router::new().route(
        "/http/upload-file-v2/direct",
        axum::routing::post(upload_endpoint),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = Config::defaults().upstream;
    config.base_url = format!("http://{addr}");
    let client = client(&config);
    let body = bytes::Bytes::from_static(b"file body");
    let id = client
        .upload(&token("plain"), "notes.txt", "text/plain", body.clone())
        .await
        .unwrap();
    assert_eq!(id, "fm-1");
    let error = client
        .upload(&token("limited"), "notes.txt", "text/plain", body)
        .await
        .unwrap_err();
    assert_eq!(
        error.kind,
        UpstreamErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    server.abort();
}

/// A signer in front of the simulator's: records each request, then either forwards it or
/// answers with a value the anti-bot check refuses.
#[derive(Clone)]
struct RecordingSigner {
    sim_signer: String,
    forward: bool,
    seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

async fn recording_sign(
    axum::extract::State(signer): axum::extract::State<RecordingSigner>,
    axum::Json(request): axum::Json<serde_json::Value>,
) -> axum::Json<serde_json::Value> {
    signer.seen.lock().unwrap().push(request.clone());
    if !signer.forward {
        return axum::Json(serde_json::json!({"x-statsig-id": base64_of("not a signature")}));
    }
    let signed = reqwest::Client::new()
        .post(&signer.sim_signer)
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    axum::Json(signed)
}

/// Starts a recording signer; returns its URL, its request log and the server task.
async fn recording_signer(
    sim: &SimHandle,
    forward: bool,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    tokio::task::JoinHandle<()>,
) {
    let signer = RecordingSigner {
        sim_signer: format!("{}/sim/sign", sim.base_url()),
        forward,
        seen: Default::default(),
    };
    let seen = signer.seen.clone();
    let app = axum::Router::new()
        .route("/sign", axum::routing::post(recording_sign))
        .with_state(signer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sign", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, server)
}

#[tokio::test]
async fn rest_signer_signs_the_page_meta_once_and_resigns_after_a_refusal() {
    let sim = spawn_sim(sim_config()).await;
    let expected = answer_for("statsig?").text;

    let (url, seen, server) = recording_signer(&sim, true).await;
    let mut config = upstream_config(&sim, ChatTransport::Rest);
    config.statsig_mode = StatsigMode::Signer;
    config.statsig_signer_url = url;
    let signed_client = client(&config);
    for _ in 0..2 {
        let answer = ask(&signed_client, &token("plain"), "statsig?")
            .await
            .unwrap();
        assert_eq!(answer.text, expected);
    }
    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        1,
        "the signed value is cached: {requests:?}"
    );
    assert_eq!(
        requests[0],
        serde_json::json!({"method": "POST", "path": "/rest/app-chat/conversations/new",
            "environment": {"metaContent": sim::SITE_VERIFICATION}})
    );
    server.abort();

    let (url, seen, server) = recording_signer(&sim, false).await;
    config.statsig_signer_url = url;
    let error = ask(&client(&config), &token("plain"), "statsig?")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(error.kind, UpstreamErrorKind::AntiBot);
    assert_eq!(seen.lock().unwrap().len(), 2, "one re-sign after the 403");
    server.abort();
}
