//! `POST /tokenize` and `POST /detokenize` in llama-server's shape: `{"content": text}` to
//! `{"tokens": [ids]}` and back.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plumb_tokenizer::Tokenizer;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{wire, AppState};

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    content: String,
    /// Add the model's BOS / EOS tokens where it wants them (default false).
    add_special: Option<bool>,
    /// Control tokens written in the text are single tokens (default true).
    parse_special: Option<bool>,
    /// Give `{"id", "piece"}` per token instead of bare ids (default false).
    with_pieces: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

fn tokenize_text(tok: &Tokenizer, req: &TokenizeRequest) -> Result<Value, ApiError> {
    let add_special = req.add_special.unwrap_or(false);
    let mut ids = tok
        .encode(&req.content, add_special, req.parse_special.unwrap_or(true))
        .map_err(|e| ApiError::invalid_param("content", format!("cannot tokenize: {e}")))?;
    if add_special && tok.add_eos_default() {
        ids.extend(tok.eos());
    }
    if !req.with_pieces.unwrap_or(false) {
        return Ok(json!({"tokens": ids}));
    }
    let tokens: Vec<Value> = ids
        .iter()
        .map(|&id| {
            let bytes = tok.token_bytes(id);
            // A piece that is not whole UTF-8 is given as its bytes.
            let piece = match String::from_utf8(bytes) {
                Ok(text) => json!(text),
                Err(e) => json!(e.into_bytes()),
            };
            json!({"id": id, "piece": piece})
        })
        .collect();
    Ok(json!({"tokens": tokens}))
}

fn detokenize_ids(tok: &Tokenizer, ids: &[u32]) -> Result<Value, ApiError> {
    let vocab = tok.vocab_size();
    if let Some(i) = ids.iter().position(|&id| id as usize >= vocab) {
        let param = format!("tokens[{i}]");
        let why = format!(
            "{param}: token id {} is out of range (the vocabulary has {vocab} tokens)",
            ids[i]
        );
        return Err(ApiError::invalid_param(&param, why));
    }
    Ok(json!({"content": tok.decode(ids)}))
}

pub async fn tokenize(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let req: TokenizeRequest = wire::parse(&s.body(body)?)?;
    let tok = s.tokenizer().clone();
    let out = tokio::task::spawn_blocking(move || tokenize_text(&tok, &req))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    Ok(Json(out).into_response())
}

pub async fn detokenize(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let req: DetokenizeRequest = wire::parse(&s.body(body)?)?;
    Ok(Json(detokenize_ids(s.tokenizer(), &req.tokens)?).into_response())
}
