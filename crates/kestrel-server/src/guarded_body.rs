//! Keeps a value alive exactly as long as a response body: until its last frame is written or
//! the client goes away (hyper drops the body either way). For a streamed response that is the
//! end of the stream, not the moment the handler returned — which is what in-flight counting
//! and the access log need. Frames and size hints pass through untouched (a JSON body keeps its
//! `Content-Length`).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;

struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> HttpBody for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `response` with `guard` dropped when its body is.
pub fn keep_until_body_ends<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response {
    let (parts, inner) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Guarded {
            inner,
            _guard: guard,
        }),
    )
}
