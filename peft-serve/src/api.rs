//! The HTTP API, OpenAI-style: `POST /v1/completions` (where `model` names an adapter or the
//! base model; `"stream": true` answers with server-sent events, one per piece of text, then
//! `data: [DONE]`, as OpenAI's API does), `GET /v1/models`, and adapter management (`POST /v1/adapters`,
//! `DELETE /v1/adapters/{name}`). Every error is JSON, `{"error": {"message", "type"}}`, with
//! the status that says whose fault it is; bad input never takes the server down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, extract::FromRequest};
use futures_util::{StreamExt, stream};
use peft_gpt2::{Gpt2Tokenizer, Sampling};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{CompletionEvent, CompletionEvents, CompletionJob, Engine, EngineError};
use crate::registry::RegistryError;
use crate::text::TextStream;

pub struct AppState {
    pub engine: Engine,
    pub tokenizer: Gpt2Tokenizer,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(engine: Engine, tokenizer: Gpt2Tokenizer) -> Self {
        Self {
            engine,
            tokenizer,
            next_id: AtomicU64::new(1),
        }
    }
}

/// The largest request body accepted: far more than any prompt that fits a GPT-2 context
/// (1,024 tokens are a few KB of text); a larger body is refused with 413 before it is read.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// At most this many `stop` strings, as OpenAI's API allows.
pub const MAX_STOP_STRINGS: usize = 4;

/// The longest `stop` string: each is matched against the text's end after every token, on
/// the HTTP threads, so its length bounds the work a request can ask of them.
pub const MAX_STOP_CHARS: usize = 1_000;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/adapters", post(load_adapter))
        .route("/v1/adapters/{name}", delete(unload_adapter))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found_error",
        message: format!(
            "no route {}; the API serves /v1/completions, /v1/models and /v1/adapters",
            uri.path()
        ),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "invalid_request_error",
        message: format!("{} does not take {method}", uri.path()),
    }
}

/// An error response.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }
}

impl ApiError {
    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let (status, kind) = match &err {
            EngineError::Registry(RegistryError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found_error")
            }
            EngineError::Registry(RegistryError::AlreadyLoaded(_)) => {
                (StatusCode::CONFLICT, "conflict_error")
            }
            EngineError::Registry(_) | EngineError::Input(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            EngineError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
            EngineError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        Self {
            status,
            kind,
            message: err.to_string(),
        }
    }
}

/// `Json`, with malformed bodies answered as a JSON 400 that says what is wrong.
pub struct JsonBody<T>(T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(body)| Self(body))
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError {
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        kind: "invalid_request_error",
                        message: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                    }
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    model: String,
    prompt: String,
    /// `null` or absent: 16, OpenAI's default.
    #[serde(default)]
    max_tokens: Option<usize>,
    /// 0 is greedy decoding; `null` or absent: 1.
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    /// Answer with server-sent events as the text is generated.
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Accepted for compatibility with OpenAI clients; only 1 is supported.
    #[serde(default)]
    n: Option<usize>,
    /// Not supported; accepted as `null` (or 0/false/1) since OpenAI clients send them.
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    best_of: Option<usize>,
    /// Not supported; accepted where they ask for nothing (0 or `null`; `{}` for
    /// `logit_bias`), since some OpenAI clients send them with every request.
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    logit_bias: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    suffix: Option<String>,
    /// An end-user id, for the client's own bookkeeping: accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    /// End the stream with a piece that carries the token counts.
    #[serde(default)]
    include_usage: bool,
}

/// OpenAI's defaults for what a request leaves out.
const DEFAULT_MAX_TOKENS: usize = 16;
const DEFAULT_TEMPERATURE: f32 = 1.0;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn strings(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

async fn completions(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let mut completing = Completing::start(state, request)?;
    if !stream {
        return Ok(Json(completing.collect().await?).into_response());
    }
    // An error before the first token (say, the adapter was unloaded meanwhile) is still an
    // ordinary JSON error response; after it, errors travel in the stream.
    let first = completing.next().await;
    if let Some(Step::Failed(err)) = first {
        return Err(err);
    }
    let pieces = stream::unfold(
        (completing, first),
        move |(mut completing, first)| async move {
            let step = match first {
                Some(step) => step,
                None => completing.next().await?,
            };
            let data = match step {
                Step::Text(text) => vec![completing.chunk(&text, None)],
                Step::End(reason) => {
                    let mut last = vec![completing.chunk("", Some(reason))];
                    if include_usage {
                        // OpenAI's `stream_options.include_usage`: a final piece with no choices.
                        let mut usage = completing.chunk("", None);
                        usage["choices"] = json!([]);
                        usage["usage"] = completing.usage();
                        last.push(usage);
                    }
                    last
                }
                Step::Failed(err) => vec![err.body()],
            };
            Some((stream::iter(data), (completing, None)))
        },
    );
    let events = pieces
        .flatten()
        .map(|data| data.to_string())
        .chain(stream::once(async { "[DONE]".to_string() }))
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Ok(Sse::new(events).into_response())
}

/// One step of a completion, as the client sees it.
enum Step {
    /// More text (never empty).
    Text(String),
    /// The completion ended: `"stop"` (end-of-text or a stop string) or `"length"`.
    End(&'static str),
    Failed(ApiError),
}

/// A completion in progress: the model thread's tokens turned into text steps.
struct Completing {
    state: Arc<AppState>,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    /// `None` once the completion has ended: dropping the receiver stops the row.
    events: Option<CompletionEvents>,
    tokens: Vec<u32>,
    completion_tokens: usize,
    decoded: String,
    text: TextStream,
    pending: VecDeque<Step>,
}

impl Completing {
    /// Checks the request and queues it with the model thread.
    fn start(state: Arc<AppState>, request: CompletionRequest) -> Result<Self, ApiError> {
        if request.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only `n: 1` is supported"));
        }
        if request.best_of.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only `best_of: 1` is supported"));
        }
        if request
            .logprobs
            .as_ref()
            .is_some_and(|v| !(v.is_null() || v == &json!(0) || v == &json!(false)))
        {
            return Err(ApiError::bad_request("`logprobs` is not supported"));
        }
        if request.echo == Some(true) {
            return Err(ApiError::bad_request("`echo` is not supported"));
        }
        for (name, penalty) in [
            ("frequency_penalty", request.frequency_penalty),
            ("presence_penalty", request.presence_penalty),
        ] {
            if penalty.is_some_and(|p| p != 0.0) {
                return Err(ApiError::bad_request(format!(
                    "`{name}` is not supported (only 0)"
                )));
            }
        }
        if request
            .logit_bias
            .as_ref()
            .is_some_and(|bias| !bias.is_empty())
        {
            return Err(ApiError::bad_request("`logit_bias` is not supported"));
        }
        if request.suffix.is_some() {
            return Err(ApiError::bad_request("`suffix` is not supported"));
        }
        let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(ApiError::bad_request("`max_tokens` must be at least 1"));
        }
        let temperature = request.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(ApiError::bad_request(format!(
                "`temperature` must be 0 (greedy) or positive, not {temperature}"
            )));
        }
        if let Some(p) = request.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ApiError::bad_request(format!(
                "`top_p` must be above 0 and at most 1, not {p}"
            )));
        }
        let sampling = Sampling::from_temperature(temperature, None, request.top_p);
        let stops: Vec<String> = request.stop.map(Stop::strings).unwrap_or_default();
        if stops.iter().any(String::is_empty) {
            return Err(ApiError::bad_request("`stop` strings must not be empty"));
        }
        if let Some(long) = stops.iter().find(|s| s.chars().count() > MAX_STOP_CHARS) {
            return Err(ApiError::bad_request(format!(
                "`stop` strings are at most {MAX_STOP_CHARS} characters, not {}",
                long.chars().count()
            )));
        }
        if stops.len() > MAX_STOP_STRINGS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_STOP_STRINGS} `stop` strings are supported, not {}",
                stops.len()
            )));
        }
        let engine = &state.engine;
        let virtual_tokens = engine.virtual_tokens(&request.model).ok_or_else(|| {
            ApiError::from(EngineError::Registry(RegistryError::NotFound(
                request.model.clone(),
            )))
        })?;
        let prompt = state
            .tokenizer
            .encode(&request.prompt)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if prompt.is_empty() {
            return Err(ApiError::bad_request("`prompt` has no tokens"));
        }
        let limit = engine.max_context;
        // Saturating: `max_tokens` is the client's number, up to u64::MAX.
        let needed = prompt
            .len()
            .saturating_add(virtual_tokens)
            .saturating_add(max_tokens);
        if needed > limit {
            return Err(ApiError::bad_request(format!(
                "the prompt is {} tokens; with `{}`'s {virtual_tokens} virtual tokens and \
                 max_tokens {}, that is {needed} positions, over the {limit} this server \
                 allows: shorten the prompt or lower max_tokens",
                prompt.len(),
                request.model,
                max_tokens,
            )));
        }
        let prompt_tokens = prompt.len();
        let events = engine.complete(CompletionJob {
            model: request.model.clone(),
            prompt,
            max_tokens,
            sampling,
            // As in OpenAI's API, a request without a seed samples a different text each time.
            seed: request.seed.unwrap_or_else(rand::random),
        })?;
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            state,
            id: format!("cmpl-{id}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: request.model,
            prompt_tokens,
            events: Some(events),
            tokens: Vec::new(),
            completion_tokens: 0,
            decoded: String::new(),
            text: TextStream::new(stops),
            pending: VecDeque::new(),
        })
    }

    /// The next step; `None` after the end.
    async fn next(&mut self) -> Option<Step> {
        while self.pending.is_empty() {
            let event = self.events.as_mut()?.recv().await;
            self.take(event);
        }
        self.pending.pop_front()
    }

    fn take(&mut self, event: Option<CompletionEvent>) {
        match event {
            Some(CompletionEvent::Token(token)) => {
                self.completion_tokens += 1;
                if token == self.state.engine.eos_id {
                    return self.end("stop"); // the end-of-text token is not text
                }
                self.tokens.push(token);
                match self.state.tokenizer.decode(&self.tokens) {
                    Ok(decoded) => self.decoded = decoded,
                    Err(err) => return self.fail(ApiError::bad_request(err.to_string())),
                }
                let shown = self.text.advance(&self.decoded);
                self.push_text(shown);
                if self.text.hit_stop() {
                    self.end("stop");
                }
            }
            Some(CompletionEvent::Done(Ok(()))) => self.end("length"),
            Some(CompletionEvent::Done(Err(err))) => self.fail(err.into()),
            None => self.fail(EngineError::Stopped.into()),
        }
    }

    fn push_text(&mut self, text: String) {
        if !text.is_empty() {
            self.pending.push_back(Step::Text(text));
        }
    }

    fn end(&mut self, reason: &'static str) {
        let rest = self.text.flush(&self.decoded);
        self.push_text(rest);
        self.pending.push_back(Step::End(reason));
        self.events = None;
    }

    fn fail(&mut self, err: ApiError) {
        self.pending.push_back(Step::Failed(err));
        self.events = None;
    }

    /// The whole completion as one response.
    async fn collect(&mut self) -> Result<Value, ApiError> {
        let mut text = String::new();
        let mut finish_reason = None;
        while let Some(step) = self.next().await {
            match step {
                Step::Text(more) => text.push_str(&more),
                Step::End(reason) => finish_reason = Some(reason),
                Step::Failed(err) => return Err(err),
            }
        }
        let mut response = self.chunk(&text, finish_reason);
        response["usage"] = self.usage();
        Ok(response)
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// A `text_completion` object: the whole response, or one streamed piece of it.
    fn chunk(&self, text: &str, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
        })
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let engine = &state.engine;
    let mut data = vec![json!({
        "id": engine.base_name,
        "object": "model",
        "owned_by": "peft-rs",
        "adapter": null,
    })];
    data.extend(engine.adapters().into_iter().map(|a| {
        json!({
            "id": a.name,
            "object": "model",
            "owned_by": "peft-rs",
            "adapter": {
                "peft_type": a.peft_type,
                "num_virtual_tokens": a.num_virtual_tokens,
                "parameters": a.parameters,
                "path": a.path,
            },
        })
    }));
    Json(json!({"object": "list", "data": data}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    name: String,
    path: std::path::PathBuf,
}

async fn load_adapter(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<LoadRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let info = state.engine.load(request.name, request.path).await?;
    Ok((StatusCode::CREATED, Json(json!(info))))
}

async fn unload_adapter(
    State(state): State<Arc<AppState>>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let info = state.engine.unload(name).await?;
    Ok(Json(json!(info)))
}
