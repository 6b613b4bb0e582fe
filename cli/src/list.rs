//! Paginated list requests (`limit` + `continue`), as JSON objects or as one merged `Table`,
//! bounded in the number of objects kept.

use jiff::Timestamp;
use serde_json::Value;

use crate::client::{Client, ACCEPT_JSON, ACCEPT_TABLE};
use crate::discovery::ApiResource;
use crate::printer::{fill_type, Table};
use crate::selector::Selectors;

/// The page size asked of the server (kubectl's `--chunk-size` default).
pub(crate) const LIST_PAGE_LIMIT_DEFAULT: u32 = 500;
/// The most objects one list keeps in memory (and prints).
pub(crate) const LIST_ITEMS_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ListError {
    #[error(transparent)]
    Api(#[from] crate::client::ApiError),
    #[error(transparent)]
    Printer(#[from] crate::printer::PrinterError),
    #[error("more than {LIST_ITEMS_MAX} objects; narrow the list with -l or --field-selector")]
    TooMany,
}

/// One list request.
#[derive(Debug, Clone)]
pub(crate) struct ListRequest<'a> {
    pub(crate) resource: &'a ApiResource,
    /// `None` lists across all namespaces (or a cluster-scoped resource).
    pub(crate) namespace: Option<&'a str>,
    pub(crate) selectors: &'a Selectors,
    /// Page size; 0 asks for everything at once.
    pub(crate) limit: u32,
}

impl ListRequest<'_> {
    fn query(&self, continue_token: &str) -> Vec<(&'static str, String)> {
        let mut query = self.selectors.query();
        if self.limit > 0 {
            query.push(("limit", self.limit.to_string()));
        }
        if !continue_token.is_empty() {
            query.push(("continue", continue_token.to_string()));
        }
        query
    }
}

/// The objects of a list (each with `apiVersion`/`kind` filled in) and the list's
/// resourceVersion.
pub(crate) async fn list_objects(
    client: &Client,
    req: &ListRequest<'_>,
) -> Result<(Vec<Value>, String), ListError> {
    let path = req.resource.collection_path(req.namespace);
    let mut items = Vec::new();
    let mut continue_token = String::new();
    let mut resource_version = String::new();
    loop {
        let page = client
            .send(
                reqwest::Method::GET,
                &path,
                &req.query(&continue_token),
                ACCEPT_JSON,
                None,
            )
            .await?;
        if resource_version.is_empty() {
            resource_version = crate::printer::meta_str(&page, "resourceVersion").to_string();
        }
        continue_token = crate::printer::meta_str(&page, "continue").to_string();
        if let Some(Value::Array(page_items)) = page.get("items") {
            if items.len() + page_items.len() > LIST_ITEMS_MAX {
                return Err(ListError::TooMany);
            }
            for mut item in page_items.iter().cloned() {
                fill_type(&mut item, &req.resource.api_version(), &req.resource.kind);
                items.push(item);
            }
        }
        if continue_token.is_empty() {
            return Ok((items, resource_version));
        }
    }
}

/// The server-side Table of a list, pages merged (the first page's columns and
/// resourceVersion).
pub(crate) async fn list_table(
    client: &Client,
    req: &ListRequest<'_>,
    now: Timestamp,
) -> Result<Table, ListError> {
    let path = req.resource.collection_path(req.namespace);
    let mut table: Option<Table> = None;
    let mut continue_token = String::new();
    loop {
        let page = client
            .send(
                reqwest::Method::GET,
                &path,
                &req.query(&continue_token),
                ACCEPT_TABLE,
                None,
            )
            .await?;
        let page = Table::from_value(page, now)?;
        continue_token = page.continue_token.clone();
        match &mut table {
            None => table = Some(page),
            Some(merged) => {
                if merged.columns.is_empty() {
                    merged.columns = page.columns;
                }
                merged.rows.extend(page.rows);
            }
        }
        if table
            .as_ref()
            .is_some_and(|t| t.rows.len() > LIST_ITEMS_MAX)
        {
            return Err(ListError::TooMany);
        }
        if continue_token.is_empty() {
            let mut table = table.unwrap_or_default();
            table.continue_token.clear();
            return Ok(table);
        }
    }
}
