//! Label and field selectors: the `-l`/`--field-selector` query parameters, and turning an
//! object's `LabelSelector` (`matchLabels` + `matchExpressions`) into selector text.

use serde_json::Value;

/// The selectors of a list or watch request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selectors {
    pub(crate) label: Option<String>,
    pub(crate) field: Option<String>,
}

impl Selectors {
    pub(crate) fn new(label: Option<&str>, field: Option<&str>) -> Selectors {
        let keep = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Selectors {
            label: keep(label),
            field: keep(field),
        }
    }

    /// The same selectors, with `metadata.name=NAME` added to the field selector.
    pub(crate) fn with_name(&self, name: &str) -> Selectors {
        let term = format!("metadata.name={name}");
        Selectors {
            label: self.label.clone(),
            field: Some(match &self.field {
                Some(field) => format!("{field},{term}"),
                None => term,
            }),
        }
    }

    /// Query parameters (`labelSelector`, `fieldSelector`).
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(label) = &self.label {
            query.push(("labelSelector", label.clone()));
        }
        if let Some(field) = &self.field {
            query.push(("fieldSelector", field.clone()));
        }
        query
    }
}

/// A `LabelSelector` object as selector text: `app=web,tier in (a,b),!canary`. A plain map
/// (a ReplicationController's `spec.selector`) is read as `matchLabels`. `None` when the
/// selector is absent or not an object.
pub(crate) fn label_selector_text(selector: &Value) -> Option<String> {
    let map = selector.as_object()?;
    let is_structured = map.contains_key("matchLabels") || map.contains_key("matchExpressions");
    let match_labels = if is_structured {
        map.get("matchLabels").and_then(Value::as_object)
    } else {
        Some(map)
    };
    let mut terms: Vec<String> = Vec::new();
    if let Some(labels) = match_labels {
        let mut pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        pairs.sort();
        terms.extend(pairs);
    }
    if is_structured {
        for expr in map
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = expr
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let term = match expr.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            };
            terms.push(term);
        }
    }
    Some(terms.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_as_text() {
        let structured = json!({
            "matchLabels": {"tier": "web", "app": "demo"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["a", "b"]},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        });
        assert_eq!(
            label_selector_text(&structured).as_deref(),
            Some("app=demo,tier=web,env in (a,b),zone notin (x),gpu,!canary")
        );
        assert_eq!(
            label_selector_text(&json!({"app": "rc"})).as_deref(),
            Some("app=rc")
        );
        assert_eq!(label_selector_text(&json!(null)), None);
    }

    #[test]
    fn query_parameters() {
        let selectors = Selectors::new(Some("app=x"), Some(" "));
        assert_eq!(
            selectors.query(),
            vec![("labelSelector", "app=x".to_string())]
        );
        assert_eq!(
            selectors.with_name("web").query(),
            vec![
                ("labelSelector", "app=x".to_string()),
                ("fieldSelector", "metadata.name=web".to_string())
            ]
        );
        assert_eq!(
            Selectors::new(None, Some("status.phase=Running"))
                .with_name("a")
                .field
                .as_deref(),
            Some("status.phase=Running,metadata.name=a")
        );
    }
}
