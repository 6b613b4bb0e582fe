//! The dashboard under `/ui/`: a login page, page shells whose script reads and watches the
//! ordinary API from the same origin, and a manifest apply endpoint.
//!
//! Authentication is the API's: the login form takes a bearer token, checks it exactly as the
//! API checks `Authorization: Bearer` and keeps it in an `HttpOnly; Secure; SameSite=Strict`
//! cookie. The API accepts that cookie only on requests that also carry `X-Keelson-UI: 1`, a
//! header a cross-site form cannot send and a cross-site script cannot send without a CORS
//! preflight this server never grants, so the cookie is no CSRF credential. Pages without a
//! valid cookie redirect to the login page; the assets (script, style) hold no data and are
//! served to anyone.

mod apply;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use keelson_api::status::StatusError;
use warp::reply::Response;

use super::request::{status_reply, ApiRequest};
use super::ApiState;

/// The header that makes the API accept the dashboard's cookie.
pub(crate) const UI_HEADER: &str = "x-keelson-ui";
/// The cookie holding the token the user logged in with.
const COOKIE_NAME: &str = "keelson_ui_token";
/// How long a login lasts in the browser.
const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;
/// The longest token the login form accepts.
const TOKEN_BYTES_MAX: usize = 4096;

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// A path under `/ui`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UiPath {
    Login,
    Logout,
    Asset(Asset),
    /// `POST /ui/apply`: apply a pasted manifest.
    Apply,
    Page(Page),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    Script,
    Style,
}

/// A page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Page {
    Overview,
    Pods,
    Deployments,
    Services,
    Events,
    ApplyForm,
    Pod { namespace: String, name: String },
}

impl Page {
    /// The page's name in `data-page` and its title.
    fn id_and_title(&self) -> (&'static str, String) {
        match self {
            Page::Overview => ("overview", "Overview".to_string()),
            Page::Pods => ("pods", "Pods".to_string()),
            Page::Deployments => ("deployments", "Deployments".to_string()),
            Page::Services => ("services", "Services".to_string()),
            Page::Events => ("events", "Events".to_string()),
            Page::ApplyForm => ("apply", "Apply a manifest".to_string()),
            Page::Pod { namespace, name } => ("pod", format!("Pod {namespace}/{name}")),
        }
    }
}

/// Which `/ui` path `path` (the request path, `/ui` included) names.
pub(crate) fn ui_path(path: &str) -> UiPath {
    let rest = path.strip_prefix("/ui").unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let name = |s: &str| -> Option<String> {
        let decoded: String = percent_decode(s)?;
        valid_name(&decoded).then_some(decoded)
    };
    match segments.as_slice() {
        [] => UiPath::Page(Page::Overview),
        ["login"] => UiPath::Login,
        ["logout"] => UiPath::Logout,
        ["assets", "app.js"] => UiPath::Asset(Asset::Script),
        ["assets", "style.css"] => UiPath::Asset(Asset::Style),
        ["apply"] => UiPath::Apply,
        ["pods"] => UiPath::Page(Page::Pods),
        ["deployments"] => UiPath::Page(Page::Deployments),
        ["services"] => UiPath::Page(Page::Services),
        ["events"] => UiPath::Page(Page::Events),
        ["pods", namespace, pod] => match (name(namespace), name(pod)) {
            (Some(namespace), Some(name)) => UiPath::Page(Page::Pod { namespace, name }),
            _ => UiPath::NotFound,
        },
        _ => UiPath::NotFound,
    }
}

/// Whether `name` could be an object or namespace name (DNS subdomain characters).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

/// The token in the dashboard's cookie, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Lets the dashboard's cookie stand for a bearer token: a request with no `Authorization`
/// header but with `X-Keelson-UI: 1` and the cookie gets `Authorization: Bearer <cookie>`,
/// which the API then checks as any bearer token (and forwards to the leader as one).
pub(crate) fn cookie_credential(headers: &mut HeaderMap) {
    if headers.contains_key(http::header::AUTHORIZATION)
        || headers.get(UI_HEADER).map(HeaderValue::as_bytes) != Some(b"1")
    {
        return;
    }
    let Some(token) = cookie_token(headers) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
}

/// Answers a request under `/ui`.
pub(crate) async fn serve(state: &ApiState, req: &ApiRequest) -> Response {
    let path = match (ui_path(&req.path), &req.method) {
        (UiPath::Apply, &Method::GET) => UiPath::Page(Page::ApplyForm),
        (path, _) => path,
    };
    match (path, &req.method) {
        (UiPath::Asset(asset), &Method::GET) => asset_reply(asset),
        (UiPath::Login, &Method::GET) => html_reply(StatusCode::OK, &login_page(None)),
        (UiPath::Login, &Method::POST) => login(state, req),
        (UiPath::Logout, &Method::POST) | (UiPath::Logout, &Method::GET) => {
            redirect("/ui/login", Some(clear_cookie()))
        }
        (UiPath::Apply, &Method::POST) => {
            // The same credential rule as the API: a bearer token, or the cookie with the
            // dashboard's header.
            match super::handler::authorize_request(state, req) {
                Ok(()) => apply::apply(state, req).await,
                Err(e) => status_reply(&e),
            }
        }
        (UiPath::Page(page), &Method::GET) => {
            let valid = cookie_token(&req.headers)
                .is_some_and(|token| super::handler::check_token(state, Some(token)).is_ok());
            if !valid {
                let clear = cookie_token(&req.headers).map(|_| clear_cookie());
                return redirect("/ui/login", clear);
            }
            html_reply(StatusCode::OK, &page_shell(&page))
        }
        (UiPath::NotFound, _) => status_reply(&super::not_found_path(format!(
            "the dashboard has no page {}; start at /ui/",
            req.path
        ))),
        (_, method) => status_reply(&StatusError::method_not_allowed(format!(
            "the dashboard does not allow {method} on {}",
            req.path
        ))),
    }
}

fn login(state: &ApiState, req: &ApiRequest) -> Response {
    let token = form_urlencoded::parse(&req.body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    if token.is_empty() {
        return html_reply(
            StatusCode::BAD_REQUEST,
            &login_page(Some("Enter a token to log in.")),
        );
    }
    // A cookie value may not hold separators or spaces; a token that needs them cannot be
    // kept, and no token this cluster issues has them.
    let cookie_safe = token.len() <= TOKEN_BYTES_MAX
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
    if !cookie_safe || super::handler::check_token(state, Some(&token)).is_err() {
        return html_reply(
            StatusCode::UNAUTHORIZED,
            &login_page(Some(
                "That token is not valid for this cluster. The admin token is the `token` of \
                 the user in the master's admin.kubeconfig.",
            )),
        );
    }
    let cookie = format!(
        "{COOKIE_NAME}={token}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; Secure; \
         SameSite=Strict"
    );
    redirect("/ui/", Some(cookie))
}

fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

fn redirect(location: &'static str, cookie: Option<String>) -> Response {
    let mut response = Response::new(Bytes::new().into());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(http::header::LOCATION, HeaderValue::from_static(location));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(http::header::SET_COOKIE, value);
    }
    response
}

fn asset_reply(asset: Asset) -> Response {
    let (body, content_type) = match asset {
        Asset::Script => (APP_JS, "text/javascript; charset=utf-8"),
        Asset::Style => (STYLE_CSS, "text/css; charset=utf-8"),
    };
    let mut response = Response::new(Bytes::from_static(body.as_bytes()).into());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn html_reply(code: StatusCode, html: &str) -> Response {
    let mut response = Response::new(Bytes::from(html.to_string()).into());
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    // Only this origin's script and style; no framing.
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `text` with HTML's special characters escaped, for text and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Keelson</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\"></head>",
        escape_html(title)
    )
}

fn login_page(error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"login-error\">{}</p>",
                escape_html(e)
            )
        })
        .unwrap_or_default();
    format!(
        "{}<body class=\"login\"><main class=\"login-box\">\
         <h1>Keelson</h1><p>Log in with a bearer token: the admin token is the <code>token</code> \
         of the user in the master's <code>admin.kubeconfig</code>, or use a service-account \
         token.</p>{error}\
         <form method=\"post\" action=\"/ui/login\" id=\"login-form\">\
         <label for=\"token\">Token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" \
         required autofocus>\
         <button type=\"submit\" id=\"login-submit\">Log in</button></form></main></body></html>\n",
        head("Log in")
    )
}

const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/ui/", "Overview"),
    ("pods", "/ui/pods", "Pods"),
    ("deployments", "/ui/deployments", "Deployments"),
    ("services", "/ui/services", "Services"),
    ("events", "/ui/events", "Events"),
    ("apply", "/ui/apply", "Apply"),
];

fn page_shell(page: &Page) -> String {
    let (id, title) = page.id_and_title();
    let nav: String = NAV
        .iter()
        .map(|(nav_id, href, label)| {
            let current = if *nav_id == id || (id == "pod" && *nav_id == "pods") {
                " class=\"current\""
            } else {
                ""
            };
            format!("<a href=\"{href}\"{current}>{label}</a>")
        })
        .collect();
    let (namespace, name) = match page {
        Page::Pod { namespace, name } => (namespace.as_str(), name.as_str()),
        _ => ("", ""),
    };
    format!(
        "{}<body data-page=\"{id}\" data-namespace=\"{}\" data-name=\"{}\">\
         <header><a class=\"brand\" href=\"/ui/\">Keelson</a><nav>{nav}</nav>\
         <form method=\"post\" action=\"/ui/logout\" class=\"logout\">\
         <button type=\"submit\" id=\"logout\">Log out</button></form></header>\
         <main><h1 id=\"title\">{}</h1><div id=\"status\" role=\"status\"></div>\
         <div id=\"content\"><p class=\"muted\">Loading…</p></div></main>\
         <script src=\"/ui/assets/app.js\"></script></body></html>\n",
        head(&title),
        escape_html(namespace),
        escape_html(name),
        escape_html(&title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases: &[(&str, UiPath)] = &[
            ("/ui", UiPath::Page(Page::Overview)),
            ("/ui/", UiPath::Page(Page::Overview)),
            ("/ui/login", UiPath::Login),
            ("/ui/logout", UiPath::Logout),
            ("/ui/assets/app.js", UiPath::Asset(Asset::Script)),
            ("/ui/assets/other.js", UiPath::NotFound),
            ("/ui/pods", UiPath::Page(Page::Pods)),
            ("/ui/pods/", UiPath::Page(Page::Pods)),
            (
                "/ui/pods/default/web-1",
                UiPath::Page(Page::Pod {
                    namespace: "default".into(),
                    name: "web-1".into(),
                }),
            ),
            ("/ui/pods/default/%3Cscript%3E", UiPath::NotFound),
            ("/ui/pods/default", UiPath::NotFound),
            ("/ui/apply", UiPath::Apply),
            ("/ui/nothing", UiPath::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(&ui_path(path), want, "{path}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookie_becomes_a_bearer_token_only_with_the_ui_header() {
        let cookie = "other=1; keelson_ui_token=abc.def; x=y";
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[("cookie", cookie), ("x-keelson-ui", "1")],
                Some("Bearer abc.def"),
            ),
            // A cross-site form cannot add the header: the cookie alone is no credential.
            (&[("cookie", cookie)], None),
            (&[("cookie", cookie), ("x-keelson-ui", "0")], None),
            (&[("x-keelson-ui", "1")], None),
            (
                &[("cookie", "keelson_ui_token="), ("x-keelson-ui", "1")],
                None,
            ),
            // An explicit Authorization header wins.
            (
                &[
                    ("cookie", cookie),
                    ("x-keelson-ui", "1"),
                    ("authorization", "Bearer other"),
                ],
                Some("Bearer other"),
            ),
        ];
        for (pairs, want) in cases {
            let mut map = headers(pairs);
            cookie_credential(&mut map);
            let got = map.get("authorization").and_then(|v| v.to_str().ok());
            assert_eq!(got, *want, "{pairs:?}");
        }
    }

    #[test]
    fn page_shell_escapes_names() {
        let html = page_shell(&Page::Pod {
            namespace: "a\"b".into(),
            name: "<x>".into(),
        });
        assert!(html.contains("data-namespace=\"a&quot;b\""));
        assert!(html.contains("data-name=\"&lt;x&gt;\""));
        assert!(!html.contains("<x>"));
    }
}
