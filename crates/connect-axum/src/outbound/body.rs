//! Reading an answer's body: an error's, cut at a bound; one of a bounded size, whole; JSON.

use serde::de::DeserializeOwned;

use super::Failure;

/// At most the first `limit` bytes of an error answer's body; a read that fails keeps what came
/// before it.
pub(super) async fn read_capped(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    body
}

/// The whole body of `response`, refused once it passes `limit` bytes.
///
/// # Errors
/// [`Failure::TooLarge`], or the failure of the read.
pub(crate) async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(Failure::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JSON of a successful answer.
///
/// # Errors
/// [`Failure::Decode`] when it is not a `T`, or the failure of the read.
pub(crate) async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Failure> {
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| Failure::Decode(e.to_string()))
}
