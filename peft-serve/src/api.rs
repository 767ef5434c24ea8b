//! The HTTP API, OpenAI-style: `POST /v1/completions` (where `model` names an adapter or the
//! base model), `GET /v1/models`, and adapter management (`POST /v1/adapters`,
//! `DELETE /v1/adapters/{name}`). Every error is JSON, `{"error": {"message", "type"}}`, with
//! the status that says whose fault it is; bad input never takes the server down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, extract::FromRequest};
use peft_gpt2::{Gpt2Tokenizer, Sampling};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{CompletionJob, Engine, EngineError};
use crate::registry::RegistryError;

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

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/adapters", post(load_adapter))
        .route("/v1/adapters/{name}", delete(unload_adapter))
        .with_state(state)
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind}});
        (self.status, Json(body)).into_response()
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
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    model: String,
    prompt: String,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
    /// 0 is greedy decoding.
    #[serde(default = "default_temperature")]
    temperature: f32,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    /// Accepted for compatibility with OpenAI clients; only 1 is supported.
    #[serde(default)]
    n: Option<usize>,
}

fn default_max_tokens() -> usize {
    16
}

fn default_temperature() -> f32 {
    1.0
}

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
) -> Result<Json<Value>, ApiError> {
    if request.stream {
        return Err(ApiError::bad_request(
            "streaming (`\"stream\": true`) is not supported yet; send the request without it",
        ));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only `n: 1` is supported"));
    }
    if request.max_tokens == 0 {
        return Err(ApiError::bad_request("`max_tokens` must be at least 1"));
    }
    let sampling = if request.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Random {
            temperature: request.temperature,
            top_k: None,
            top_p: request.top_p,
        }
    };
    let stops: Vec<String> = request.stop.map(Stop::strings).unwrap_or_default();
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("`stop` strings must not be empty"));
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
    let limit = engine.n_positions;
    if prompt.len() + virtual_tokens + request.max_tokens > limit {
        return Err(ApiError::bad_request(format!(
            "the prompt is {} tokens; with `{}`'s {virtual_tokens} virtual tokens and \
             max_tokens {}, that is {} positions, over the model's {limit}: shorten the \
             prompt or lower max_tokens",
            prompt.len(),
            request.model,
            request.max_tokens,
            prompt.len() + virtual_tokens + request.max_tokens
        )));
    }
    let completion = engine
        .complete(CompletionJob {
            model: request.model.clone(),
            prompt: prompt.clone(),
            max_tokens: request.max_tokens,
            sampling,
            seed: request.seed.unwrap_or(0),
        })
        .await?;

    let completion_tokens = completion.tokens.len();
    let mut tokens = completion.tokens;
    let mut finish_reason = if completion.stopped { "stop" } else { "length" };
    if completion.stopped {
        tokens.pop(); // the end-of-text token is not text
    }
    let mut text = state
        .tokenizer
        .decode(&tokens)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
        finish_reason = "stop";
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({
        "id": format!("cmpl-{id}"),
        "object": "text_completion",
        "created": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "model": request.model,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt.len(),
            "completion_tokens": completion_tokens,
            "total_tokens": prompt.len() + completion_tokens,
        },
    })))
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
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = state.engine.unload(name).await?;
    Ok(Json(json!(info)))
}
