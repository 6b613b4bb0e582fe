//! `POST /ui/apply`: a manifest pasted into the dashboard (YAML or JSON, one or more
//! documents) applied as `kctl apply` does: Server-Side Apply of each object through the
//! API's own handler, with the caller's credential.

use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use keelson_api::resources;
use keelson_api::status::StatusError;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::reply::Response;

use super::super::request::{json_reply, status_reply, ApiRequest};
use super::super::ApiState;

/// The most documents one pasted manifest may hold.
const DOCUMENTS_MAX: usize = 100;
/// The field manager the dashboard applies as.
const FIELD_MANAGER: &str = "keelson-ui";

/// Where one document is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `deployment.apps/web`, as `kctl` names objects.
    label: String,
    namespace: Option<String>,
    path: String,
}

/// The documents of a manifest (empty documents skipped).
fn documents(text: &str) -> Result<Vec<Value>, StatusError> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| {
            StatusError::bad_request(format!("the manifest is not valid YAML or JSON: {e}"))
        })?;
        if value.is_null() {
            continue;
        }
        if out.len() == DOCUMENTS_MAX {
            return Err(StatusError::bad_request(format!(
                "the manifest holds more than {DOCUMENTS_MAX} documents; apply it in parts"
            )));
        }
        out.push(value);
    }
    if out.is_empty() {
        return Err(StatusError::bad_request(
            "the manifest is empty; paste one or more objects in YAML or JSON".to_string(),
        ));
    }
    Ok(out)
}

/// The object path a document is applied to.
fn target(document: &Value) -> Result<Target, String> {
    let api_version = document["apiVersion"]
        .as_str()
        .ok_or("the object has no apiVersion")?;
    let kind = document["kind"].as_str().ok_or("the object has no kind")?;
    let resource = resources::find_kind(api_version, kind)
        .ok_or_else(|| format!("this cluster serves no kind {kind} in {api_version}"))?;
    let name = document["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("the {kind} has no metadata.name"))?;
    let namespace = resource.namespaced.then(|| {
        document["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string()
    });
    let singular = if resource.group.is_empty() {
        resource.singular.to_string()
    } else {
        format!("{}.{}", resource.singular, resource.group)
    };
    let encode =
        |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>() };
    Ok(Target {
        label: format!("{singular}/{name}"),
        path: format!(
            "{}/{}",
            resource.collection_path(namespace.as_deref().map(encode).as_deref()),
            encode(name)
        ),
        namespace,
    })
}

pub(super) async fn apply(state: &ApiState, req: &ApiRequest) -> Response {
    let Ok(text) = std::str::from_utf8(&req.body) else {
        return status_reply(&StatusError::bad_request(
            "the manifest is not UTF-8 text".to_string(),
        ));
    };
    let documents = match documents(text) {
        Ok(documents) => documents,
        Err(e) => return status_reply(&e),
    };
    let mut results = Vec::with_capacity(documents.len());
    for document in documents {
        let target = match target(&document) {
            Ok(target) => target,
            Err(message) => {
                results.push(json!({"object": Value::Null, "ok": false, "message": message}));
                continue;
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(auth) = req.headers.get(http::header::AUTHORIZATION) {
            headers.insert(http::header::AUTHORIZATION, auth.clone());
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/apply-patch+yaml"),
        );
        let body = serde_json::to_vec(&document).unwrap_or_default();
        let query = format!("fieldManager={FIELD_MANAGER}&force=true");
        let sub = match ApiRequest::new(
            Method::PATCH,
            target.path.clone(),
            Some(&query),
            headers,
            body.into(),
        ) {
            Ok(sub) => sub,
            Err(e) => return status_reply(&e),
        };
        // The API's own handler: authentication, forwarding to the leader, admission.
        let response = super::super::handler::serve_resource(state, &sub).await;
        let code = response.status();
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => bytes::Bytes::new(),
        };
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (ok, message) = if code.is_success() {
            let outcome = if code == StatusCode::CREATED {
                "created"
            } else {
                "applied"
            };
            (true, outcome.to_string())
        } else {
            let message = answer["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the API answered {code}"));
            (false, message)
        };
        results.push(json!({
            "object": target.label,
            "namespace": target.namespace,
            "ok": ok,
            "message": message,
        }));
    }
    json_reply(StatusCode::OK, &json!({"results": results}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest and its label, namespace and path, or the error.
    type Case<'a> = (
        &'a str,
        Result<(&'a str, Option<&'a str>, &'a str), &'a str>,
    );

    #[test]
    fn targets() {
        let cases: &[Case] = &[
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}",
                Ok((
                    "deployment.apps/web",
                    Some("default"),
                    "/apis/apps/v1/namespaces/default/deployments/web",
                )),
            ),
            (
                "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\",\"namespace\":\"n\"}}",
                Ok(("pod/p", Some("n"), "/api/v1/namespaces/n/pods/p")),
            ),
            (
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}",
                Ok(("namespace/team", None, "/api/v1/namespaces/team")),
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {}",
                Err("the Pod has no metadata.name"),
            ),
            (
                "apiVersion: v9\nkind: Gadget\nmetadata: {name: x}",
                Err("this cluster serves no kind Gadget in v9"),
            ),
            ("kind: Pod", Err("the object has no apiVersion")),
        ];
        for (text, want) in cases {
            let document: Value = serde_norway::from_str(text).unwrap();
            let got = target(&document);
            match (got, want) {
                (Ok(t), Ok((label, ns, path))) => {
                    assert_eq!(
                        (t.label.as_str(), t.namespace.as_deref(), t.path.as_str()),
                        (*label, *ns, *path),
                        "{text}"
                    );
                }
                (Err(e), Err(msg)) => assert_eq!(e, *msg, "{text}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn documents_split_and_bound() {
        let two = "a: 1\n---\n---\nb: 2\n";
        assert_eq!(documents(two).unwrap().len(), 2);
        assert!(documents("").is_err());
        assert!(documents("a: [").is_err());
        let many = "a: 1\n---\n".repeat(DOCUMENTS_MAX + 1);
        assert!(documents(&many).is_err());
        assert_eq!(
            documents(&"a: 1\n---\n".repeat(DOCUMENTS_MAX))
                .unwrap()
                .len(),
            DOCUMENTS_MAX
        );
    }
}
