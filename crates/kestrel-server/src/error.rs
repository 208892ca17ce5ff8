//! One error type for every route, mapped once to an HTTP status and OpenAI's error body
//! (TGI's `From<InferError> for (StatusCode, Json<ErrorResponse>)` pattern).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kestrel_engine::SamplingError;
use kestrel_protocol::{ErrorBody, ParseError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A malformed or out-of-range request; `param` names the field.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("invalid or missing API key")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The engine's queue is full: 503 with `Retry-After`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// Loading, or the engine died: 503 without a retry hint.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(param: impl Into<Option<&'static str>>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: param.into().map(str::to_string),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `{"error":{"message","type","param","code"}}`; `code` is the HTTP status as vLLM sends it.
    pub fn body(&self) -> ErrorBody {
        let kind = match self {
            ApiError::BadRequest { .. } | ApiError::PayloadTooLarge(_) => "invalid_request_error",
            ApiError::Unauthorized => "authentication_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::Overloaded { .. } | ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "server_error",
        };
        let param = match self {
            ApiError::BadRequest { param, .. } => param.clone(),
            _ => None,
        };
        ErrorBody::new(
            self.to_string(),
            kind,
            param,
            Some(self.status().as_u16().into()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Overloaded {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::BadRequest {
            message: e.message,
            param: e.param,
        }
    }
}

impl From<SamplingError> for ApiError {
    fn from(e: SamplingError) -> Self {
        ApiError::BadRequest {
            message: e.message,
            param: Some(e.param.to_string()),
        }
    }
}

impl From<kestrel_text::Error> for ApiError {
    fn from(e: kestrel_text::Error) -> Self {
        match e {
            kestrel_text::Error::TemplateRaised(_) | kestrel_text::Error::TemplateInput(_) => {
                ApiError::BadRequest {
                    message: e.to_string(),
                    param: Some("messages".into()),
                }
            }
            kestrel_text::Error::NoChatTemplate => ApiError::BadRequest {
                message: e.to_string(),
                param: None,
            },
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        let e = ApiError::bad_request("max_tokens", "`max_tokens` must be at least 1");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let b = serde_json::to_value(e.body()).unwrap();
        assert_eq!(b["error"]["param"], "max_tokens");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["code"], 400);
        let r = ApiError::Overloaded {
            message: "the engine's queue is full".into(),
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
    }
}
