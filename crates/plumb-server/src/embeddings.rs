//! `POST /v1/embeddings` in OpenAI's shape: `input` a string, a list of strings, a list of
//! token ids or a list of such lists; `encoding_format` `float` (default) or `base64` (the
//! little-endian f32 bytes); `dimensions` accepted only as the model's own. An input longer
//! than the model's `max_seq_length` is refused, as OpenAI refuses one, unless the request
//! says `"truncate": true` (plumb's own field: cut it as sentence-transformers does). The
//! inputs of a request run in batches on a blocking thread; requests take turns on the
//! encoder.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use plumb_engine::{EmbedInput, Embedder, Embeddings, EngineError, TooLong};
use plumb_ops::Backend;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{wire, AppState};

/// Embeds a batch of inputs.
type EmbedFn = dyn Fn(&[EmbedInput], TooLong) -> plumb_engine::Result<Embeddings> + Send + Sync;

/// An encoder behind the server, its backend type erased.
#[derive(Clone)]
pub struct EmbedModel {
    /// The model's id on the API.
    pub id: String,
    pub dim: usize,
    /// The most tokens an input may have, special tokens included.
    pub max_tokens: usize,
    run: Arc<EmbedFn>,
}

impl EmbedModel {
    pub fn new<B: Backend + 'static>(embedder: Embedder<B>) -> EmbedModel {
        let (id, dim, max_tokens) = (embedder.name.clone(), embedder.dim(), embedder.max_tokens());
        let e = Mutex::new(embedder);
        EmbedModel {
            id,
            dim,
            max_tokens,
            run: Arc::new(move |inputs, too_long| {
                // A panic elsewhere cannot leave the encoder half-changed: `embed` is `&self`.
                let e = e.lock().unwrap_or_else(|p| p.into_inner());
                e.embed(inputs, too_long)
            }),
        }
    }
}

impl EmbedModel {
    /// The model's entry in `GET /v1/models`.
    pub(crate) fn model_object(&self, created: u64) -> Value {
        json!({
            "id": self.id,
            "object": "model",
            "created": created,
            "owned_by": "plumb",
            "max_model_len": self.max_tokens,
            "dimensions": self.dim,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Ids(Vec<u32>),
    ManyIds(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// plumb's own: cut inputs longer than the model takes instead of refusing them.
    #[serde(default)]
    truncate: bool,
}

pub async fn embeddings(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    s.authorize(&headers)?;
    let body = s.body(body)?;
    let Some(model) = s.inner.embed.clone() else {
        return Err(ApiError::not_found(
            "/v1/embeddings: this server has no embedding model (start it with --embedding-model)",
        ));
    };
    let req: EmbeddingRequest = wire::parse(&body)?;
    if req.model != model.id {
        return Err(ApiError::model_not_found(&req.model, &model.id));
    }
    if let Some(d) = req.dimensions.filter(|&d| d != model.dim) {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "{} gives vectors of {} dimensions only, not {d}",
                model.id, model.dim
            ),
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("{other:?} is neither \"float\" nor \"base64\""),
            ))
        }
    };
    let inputs: Vec<EmbedInput> = match req.input {
        Input::One(t) => vec![EmbedInput::Text(t)],
        Input::Many(ts) => ts.into_iter().map(EmbedInput::Text).collect(),
        Input::Ids(ids) => vec![EmbedInput::Ids(ids)],
        Input::ManyIds(l) => l.into_iter().map(EmbedInput::Ids).collect(),
    };
    if inputs.is_empty() {
        return Err(ApiError::invalid_param("input", "no input to embed"));
    }
    let too_long = if req.truncate {
        TooLong::Truncate
    } else {
        TooLong::Refuse
    };
    let run = model.run.clone();
    let out = tokio::task::spawn_blocking(move || run(&inputs, too_long))
        .await
        .map_err(|e| ApiError::internal(format!("embedding task failed: {e}")))?
        .map_err(|e| match e {
            EngineError::BadRequest(m) => ApiError::invalid_param("input", m),
            other => ApiError::internal(format!("embedding failed: {other}")),
        })?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model.id,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
    })))
}

/// The little-endian bytes of `v` in standard base64 (with padding).
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_floats_matches_known_encodings() {
        // 1.0f32 = 00 00 80 3F; [1.0, 2.0] = 00 00 80 3F 00 00 00 40 (from Python's
        // base64.b64encode(struct.pack('<2f', 1, 2))).
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(super::base64_f32(&[]), "");
    }
}
