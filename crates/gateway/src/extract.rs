//! Request extractors that turn bad input into problem+json naming the field, instead of
//! axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Wrong content type → 415, unreadable JSON → 400, a field of the wrong
/// shape or an unknown field → 422 naming it, too large → 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than this server accepts",
                    )
                } else {
                    ApiError::bad_request("unreadable_body", e.body_text())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// [`ApiJson`] for a body whose every field is optional: no body at all (no
/// `Content-Type` needed) reads as the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T, S> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        let no_body = declared_empty
            || (req.headers().get(header::CONTENT_TYPE).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none()
                && req.headers().get(header::CONTENT_LENGTH).is_none());
        if no_body {
            return Ok(Self(T::default()));
        }
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| Self(v))
    }
}

/// Deserialize `bytes`, reporting the path of the field at fault. A string holding NUL
/// (which PostgreSQL cannot store) is refused naming its field, and so is a body that is
/// not a JSON object: every body Parley takes is one, and serde would otherwise fill a
/// struct from an array by position (`["x", "y"]` read as `{"name": "x", …}`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(ApiError::invalid_field(
                "(body)",
                "the request body must be a JSON object ({…})",
            ));
        }
        _ => {}
    }
    if parley_core::storable::may_hold_nul(bytes)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(path) = parley_core::storable::first_nul(&v)
    {
        return Err(ApiError::invalid_field(
            path,
            "must not contain the NUL character (U+0000)",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let msg = strip_position(&inner.to_string());
                    Err(ApiError::invalid_field(field_name(&path, &msg), msg))
                }
                _ => Err(ApiError::bad_request(
                    "invalid_json",
                    format!("the request body is not valid JSON: {inner}"),
                )),
            }
        }
    }
}

/// serde_json appends " at line 1 column 23"; the field name says more to a client.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The offending field: the path serde reports, or for a missing or unknown field at the
/// top level, the name quoted in the message.
fn field_name(path: &str, msg: &str) -> String {
    let quoted = || {
        let start = msg.find('`')? + 1;
        let end = msg[start..].find('`')? + start;
        Some(msg[start..end].to_owned())
    };
    let join = |prefix: &str, name: String| {
        if prefix == "." || prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        }
    };
    if (msg.starts_with("missing field") || msg.starts_with("unknown field"))
        && let Some(name) = quoted()
    {
        // For an unknown field serde's path already ends in it.
        if path.ends_with(&name) {
            return path.to_owned();
        }
        return join(path, name);
    }
    if path == "." || path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// Path parameters; a malformed one (e.g. not a UUID) → 400 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_escaped_nul(parts.uri.path()) {
            return Err(ApiError::bad_request(
                "invalid_path_parameter",
                "path parameters must not contain the NUL character (%00)",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(ApiError::bad_request(
                "invalid_path_parameter",
                e.body_text(),
            )),
        }
    }
}

/// Query parameters; a malformed one → 400 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some(pair) = query.split('&').find(|p| has_escaped_nul(p)) {
            let name = pair.split('=').next().unwrap_or_default();
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{name}` must not contain the NUL character (%00)"),
            ));
        }
        let de = serde_urlencoded_de(query);
        de.map(ApiQuery)
    }
}

/// Whether percent-encoded text carries a NUL (`%00`), which PostgreSQL cannot store.
fn has_escaped_nul(s: &str) -> bool {
    s.as_bytes().windows(3).any(|w| w == b"%00")
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_query", "the query string is malformed"))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Login {
        email: String,
        tries: u8,
    }

    fn status_of(body: &str) -> u16 {
        parse_json::<Login>(body.as_bytes()).map_or_else(|e| e.status().as_u16(), |_| 200)
    }

    #[test]
    fn errors_name_the_field() {
        let err = |b: &str| parse_json::<Login>(b.as_bytes()).expect_err("invalid");
        let e = err(r#"{"email": "a@b.c"}"#);
        assert_eq!(e.status().as_u16(), 422);
        assert_eq!(e.fields(), vec!["tries".to_owned()]);
        let e = err(r#"{"email": 5, "tries": 1}"#);
        assert_eq!(e.fields(), vec!["email".to_owned()]);
        let e = err(r#"{"emial": "a@b.c", "tries": 1}"#);
        assert_eq!(e.fields(), vec!["emial".to_owned()]);
        let e = err(r#"{"email": "a@b.c", "tries": 300}"#);
        assert_eq!(e.fields(), vec!["tries".to_owned()]);
        assert_eq!(status_of(r#"{"email": "#), 400);
        assert_eq!(status_of("[]"), 422);
        // An array is never read as a struct by position.
        assert_eq!(status_of(r#"["a@b.c", 1]"#), 422);
        assert_eq!(status_of(r#"{"email": "a@b.c", "tries": 1}"#), 200);
        let e = err(r#"{"email": "a\u0000@b.c", "tries": 1}"#);
        assert_eq!(e.status().as_u16(), 422);
        assert_eq!(e.fields(), vec!["email".to_owned()]);
    }
}
