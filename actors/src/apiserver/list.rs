//! List: a collection read at one revision, filtered by label and field selectors, paged with
//! `limit` and an opaque `continue` token that keeps the first page's revision.

use base64::Engine;
use http::StatusCode;
use keelson_api::selectors::{FieldSelector, LabelSelector};
use keelson_api::status::StatusError;
use keelson_api::table;
use keelson_raft::Consistency;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::objects::{prefix_of, Reply};
use super::request::ApiRequest;
use super::route::ResourcePath;
use super::storage::Stored;
use super::ApiState;

/// The most objects one list answer holds; a larger `limit` is cut to this, and a list without
/// a limit is read in chunks of it.
pub(crate) const LIST_ITEMS_MAX: usize = 5000;
/// Keys read from the store per round while filtering with selectors.
const LIST_CHUNK_KEYS: usize = 500;
/// The most store rounds one list request makes.
const LIST_ROUNDS_MAX: usize = 200;

/// What a `continue` token carries.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    /// The revision of the first page.
    rv: u64,
    /// The key the next page starts at (base64).
    start: String,
}

fn encode_continue(revision: u64, key: &[u8]) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = ContinueToken {
        rv: revision,
        start: engine.encode(key),
    };
    engine.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<(u64, Vec<u8>), StatusError> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let invalid = || {
        StatusError::bad_request(
            "continue key is not valid: send back the continue value of a list response"
                .to_string(),
        )
    };
    let raw = engine.decode(token).map_err(|_| invalid())?;
    let token: ContinueToken = serde_json::from_slice(&raw).map_err(|_| invalid())?;
    let start = engine.decode(token.start).map_err(|_| invalid())?;
    Ok((token.rv, start))
}

/// The selectors of a list or watch request.
pub(crate) struct Filter {
    pub(crate) labels: Option<LabelSelector>,
    pub(crate) fields: Option<FieldSelector>,
}

impl Filter {
    pub(crate) fn from_request(req: &ApiRequest, path: &ResourcePath) -> Result<Self, StatusError> {
        let labels = req
            .param("labelSelector")
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| StatusError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = req
            .param("fieldSelector")
            .map(|s| FieldSelector::parse(path.resource, s))
            .transpose()
            .map_err(|e| StatusError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        if let Some(labels) = &self.labels {
            if !labels.matches_object(obj) {
                return false;
            }
        }
        if let Some(fields) = &self.fields {
            if !fields.matches(obj) {
                return false;
            }
        }
        true
    }
}

/// The matching objects of one list request and where it stopped.
pub(crate) struct Listed {
    pub(crate) items: Vec<Stored>,
    pub(crate) revision: u64,
    pub(crate) continue_token: Option<String>,
}

/// Reads the collection of `path` as the request's parameters say.
async fn read_list(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
    limit: usize,
) -> Result<Listed, StatusError> {
    let filter = Filter::from_request(req, path)?;
    let prefix = prefix_of(path);
    let (mut revision, mut start, consistency) = match req.param("continue") {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            (rv, Some(start), Consistency::Serializable)
        }
        None => match (
            req.param("resourceVersion"),
            req.param("resourceVersionMatch"),
        ) {
            (Some("0"), _) => (0, None, Consistency::Serializable),
            (Some(rv), Some("Exact")) => (
                rv.parse::<u64>().map_err(|_| {
                    StatusError::bad_request(format!("resourceVersion {rv:?} is not valid"))
                })?,
                None,
                Consistency::Serializable,
            ),
            _ => (0, None, Consistency::Linearizable),
        },
    };
    let mut consistency = consistency;
    let mut items = Vec::new();
    let mut continue_token = None;
    for _ in 0..LIST_ROUNDS_MAX {
        let want = limit - items.len();
        let chunk = if filter.is_empty() {
            want
        } else {
            LIST_CHUNK_KEYS
        };
        let page = state
            .storage
            .page(&prefix, start.as_deref(), revision, chunk, consistency)
            .await
            .map_err(|e| {
                if e.code() == 410 {
                    StatusError::expired(
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter."
                            .to_string(),
                    )
                } else {
                    e
                }
            })?;
        // Later rounds read at the revision of the first.
        revision = page.revision;
        consistency = Consistency::Serializable;
        let count = page.items.len();
        let mut stopped_at = None;
        for (i, stored) in page.items.into_iter().enumerate() {
            if items.len() == limit {
                stopped_at = Some(stored.key.clone());
                let _ = i;
                break;
            }
            if filter.matches(&stored.object) {
                items.push(stored);
            }
        }
        let next = stopped_at.or(page.next_key);
        match next {
            None => break,
            Some(next) => {
                if items.len() == limit {
                    continue_token = Some(encode_continue(revision, &next));
                    break;
                }
                if count == 0 {
                    break;
                }
                start = Some(next);
            }
        }
    }
    Ok(Listed {
        items,
        revision,
        continue_token,
    })
}

fn requested_limit(req: &ApiRequest) -> Result<usize, StatusError> {
    match req.param("limit") {
        None => Ok(LIST_ITEMS_MAX),
        Some(text) => {
            let limit: i64 = text
                .parse()
                .map_err(|_| StatusError::bad_request(format!("limit {text:?} is not a number")))?;
            Ok(if limit <= 0 {
                LIST_ITEMS_MAX
            } else {
                (limit as usize).min(LIST_ITEMS_MAX)
            })
        }
    }
}

/// Every matching object (for deletecollection and namespace cleanup), in rounds of the
/// largest page.
pub(crate) async fn list_all(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
) -> Result<Listed, StatusError> {
    read_list(state, req, path, LIST_ITEMS_MAX).await
}

pub(crate) async fn list(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let limit = requested_limit(req)?;
    let listed = read_list(state, req, path, limit).await?;
    let mut metadata = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(token) = &listed.continue_token {
        metadata["continue"] = Value::String(token.clone());
    }
    let objects: Vec<Value> = listed.items.into_iter().map(|s| s.object).collect();
    if req.wants_table() {
        let mut table = table::table(path.resource.kind, &objects, jiff::Timestamp::now());
        table["metadata"] = metadata;
        return Ok((StatusCode::OK, table));
    }
    Ok((
        StatusCode::OK,
        json!({
            "kind": path.resource.list_kind(),
            "apiVersion": path.resource.api_version(),
            "metadata": metadata,
            "items": objects,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, b"/registry/pods/default/b");
        assert_eq!(
            decode_continue(&token).unwrap(),
            (42, b"/registry/pods/default/b".to_vec())
        );
        assert_eq!(decode_continue("not-a-token").unwrap_err().code(), 400);
    }
}
