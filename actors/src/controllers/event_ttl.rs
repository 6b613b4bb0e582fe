//! Event expiry, the job of kube-apiserver's `--event-ttl` (there an etcd lease per Event):
//! Events whose last time is older than the TTL are deleted, so recording events never grows
//! the store without bound. A pass lists Events page by page (bounded pages, bounded pages per
//! pass) and deletes at most [`DELETE_BATCH_MAX`] of them, each with its resourceVersion as a
//! precondition, so an Event refreshed (its count bumped) since the list is kept.

use std::str::FromStr;
use std::time::Duration;

use keelson_api::object;
use keelson_api::resources;
use serde_json::{json, Value};

use crate::control_plane::ControllerContext;
use crate::supervisor::StopSignal;

/// Events listed per request.
const LIST_PAGE_EVENTS: usize = 500;
/// Pages looked at in one pass (so one pass reads at most 10,000 Events).
const PAGES_PER_PASS_MAX: usize = 20;
/// Events deleted in one pass; a full batch makes the next pass come at once.
pub(crate) const DELETE_BATCH_MAX: usize = 500;
/// The longest wait between passes, whatever the TTL.
const INTERVAL_MAX: Duration = Duration::from_secs(60);
/// The shortest wait between passes.
const INTERVAL_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventTtlError {
    #[error("invalid event TTL {0:?}: use a duration such as 1h, 30m, 90s or 1h30m")]
    Invalid(String),
    #[error("the event TTL must be at least one second")]
    TooShort,
}

/// How long an Event lives after its last occurrence (`--event-ttl`; Kubernetes' default 1h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTtl(pub Duration);

impl Default for EventTtl {
    fn default() -> Self {
        EventTtl(Duration::from_secs(3600))
    }
}

impl FromStr for EventTtl {
    type Err = EventTtlError;

    /// Go-style durations: `1h`, `30m`, `90s`, `1h30m`, `500ms`; a bare number is seconds.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || EventTtlError::Invalid(text.to_string());
        let s = text.trim();
        if let Ok(seconds) = s.parse::<u64>() {
            return EventTtl::checked(Duration::from_secs(seconds));
        }
        let mut rest = s;
        let mut total = Duration::ZERO;
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => Duration::from_millis(1),
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                "h" => Duration::from_secs(3600),
                _ => return Err(invalid()),
            };
            rest = &rest[unit_len..];
            let part = u32::try_from(number)
                .ok()
                .and_then(|n| unit.checked_mul(n))
                .ok_or_else(invalid)?;
            total = total.checked_add(part).ok_or_else(invalid)?;
        }
        EventTtl::checked(total)
    }
}

impl EventTtl {
    fn checked(ttl: Duration) -> Result<EventTtl, EventTtlError> {
        if ttl < Duration::from_secs(1) {
            return Err(EventTtlError::TooShort);
        }
        Ok(EventTtl(ttl))
    }

    /// How often expired Events are looked for: a quarter of the TTL, within 1 s .. 60 s.
    pub fn interval(self) -> Duration {
        (self.0 / 4).clamp(INTERVAL_MIN, INTERVAL_MAX)
    }
}

/// When an Event last happened: the newest of `series.lastObservedTime`, `lastTimestamp` and
/// `eventTime`; without any, `firstTimestamp`; else its creation time. `None` when it carries
/// no readable time at all. (An Event recorded late about something long past is as old as
/// what it says.)
pub(crate) fn last_time(event: &Value) -> Option<jiff::Timestamp> {
    let time = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let latest = [
        event.pointer("/series/lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
    ]
    .into_iter()
    .filter_map(time)
    .max();
    latest
        .or_else(|| time(event.get("firstTimestamp")))
        .or_else(|| time(event.pointer("/metadata/creationTimestamp")))
}

/// An Event to delete: namespace, name, resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expired {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) resource_version: String,
}

/// The Events of `events` older than `ttl` at `now`, oldest first, at most `max`. An Event
/// with no readable time is left alone (its creation time is stamped by the API, so this
/// does not happen to Events the API stored).
pub(crate) fn expired(
    events: &[Value],
    now: jiff::Timestamp,
    ttl: Duration,
    max: usize,
) -> Vec<Expired> {
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return Vec::new();
    };
    let Ok(cutoff) = now.checked_sub(ttl) else {
        return Vec::new();
    };
    let mut old: Vec<(jiff::Timestamp, Expired)> = events
        .iter()
        .filter_map(|e| {
            let last = last_time(e)?;
            if last >= cutoff {
                return None;
            }
            Some((
                last,
                Expired {
                    namespace: object::namespace(e)?.to_string(),
                    name: object::name(e)?.to_string(),
                    resource_version: object::resource_version(e).unwrap_or("").to_string(),
                },
            ))
        })
        .collect();
    old.sort_by_key(|a| a.0);
    old.into_iter().take(max).map(|(_, e)| e).collect()
}

/// One pass: finds and deletes expired Events; returns how many were deleted and whether the
/// batch was full (more may be waiting).
async fn pass(ctx: &ControllerContext, ttl: EventTtl) -> anyhow::Result<(usize, bool)> {
    let events = resources::find("", "v1", "events")
        .ok_or_else(|| anyhow::anyhow!("the API does not serve events"))?;
    let path = crate::client::object_path(events, None, None);
    let mut found: Vec<Expired> = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..PAGES_PER_PASS_MAX {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &LIST_PAGE_EVENTS.to_string());
            if let Some(t) = &token {
                query.append_pair("continue", t);
            }
            query.finish()
        };
        let page = ctx
            .client
            .request(
                http::Method::GET,
                &path,
                Some(&query),
                "application/json",
                None,
            )
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let left = DELETE_BATCH_MAX - found.len();
        found.extend(expired(&items, jiff::Timestamp::now(), ttl.0, left));
        token = page
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() || found.len() >= DELETE_BATCH_MAX {
            break;
        }
    }
    let full = found.len() >= DELETE_BATCH_MAX;
    let mut deleted = 0;
    for event in found {
        let path = crate::client::object_path(events, Some(&event.namespace), Some(&event.name));
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if !event.resource_version.is_empty() {
            options["preconditions"] = json!({"resourceVersion": event.resource_version});
        }
        match ctx
            .client
            .request(
                http::Method::DELETE,
                &path,
                None,
                "application/json",
                Some(&options),
            )
            .await
        {
            Ok(_) => deleted += 1,
            // Gone already, or refreshed since the list (it lives on): nothing to do.
            Err(e) if e.code() == 404 || e.code() == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((deleted, full))
}

/// Deletes expired Events until `stop`.
pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let ttl = ctx.config.event_ttl;
    tracing::info!(ttl = ?ttl.0, interval = ?ttl.interval(), "expiring events");
    loop {
        let wait = match pass(&ctx, ttl).await {
            Ok((deleted, full)) => {
                if deleted > 0 {
                    metrics::counter!("keelson_events_expired_total").increment(deleted as u64);
                    tracing::debug!(deleted, "expired events deleted");
                }
                if full {
                    Duration::from_millis(100)
                } else {
                    ttl.interval()
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot expire events");
                ttl.interval()
            }
        };
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        let cases: [(&str, Result<Duration, ()>); 9] = [
            ("1h", Ok(Duration::from_secs(3600))),
            ("3s", Ok(Duration::from_secs(3))),
            ("90", Ok(Duration::from_secs(90))),
            ("1h30m", Ok(Duration::from_secs(5400))),
            ("1500ms", Ok(Duration::from_millis(1500))),
            ("500ms", Err(())),
            ("0", Err(())),
            ("", Err(())),
            ("1d", Err(())),
        ];
        for (text, want) in cases {
            let got = text.parse::<EventTtl>().map(|t| t.0).map_err(|_| ());
            assert_eq!(got, want, "{text:?}");
        }
        assert_eq!(EventTtl::default().interval(), Duration::from_secs(60));
        assert_eq!(
            EventTtl(Duration::from_secs(3)).interval(),
            Duration::from_secs(1)
        );
        assert_eq!(
            EventTtl(Duration::from_secs(120)).interval(),
            Duration::from_secs(30)
        );
    }

    fn event(name: &str, times: Value) -> Value {
        let mut e = json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z"}});
        if let (Some(e), Some(t)) = (e.as_object_mut(), times.as_object()) {
            for (k, v) in t {
                e.insert(k.clone(), v.clone());
            }
        }
        e
    }

    #[test]
    fn the_newest_time_counts() {
        let cases = [
            (json!({}), "2026-01-01T00:00:00Z"),
            (
                json!({"lastTimestamp": "2026-01-01T00:10:00Z"}),
                "2026-01-01T00:10:00Z",
            ),
            (
                json!({"eventTime": "2026-01-01T00:20:00.123456Z"}),
                "2026-01-01T00:20:00.123456Z",
            ),
            (
                json!({"eventTime": "2026-01-01T00:20:00Z",
                       "series": {"count": 3, "lastObservedTime": "2026-01-01T00:30:00Z"}}),
                "2026-01-01T00:30:00Z",
            ),
            (
                json!({"lastTimestamp": null, "eventTime": "bogus"}),
                "2026-01-01T00:00:00Z",
            ),
            // Recorded now (created) about something long past: as old as it says.
            (
                json!({"lastTimestamp": "2025-06-01T00:00:00Z"}),
                "2025-06-01T00:00:00Z",
            ),
            (
                json!({"firstTimestamp": "2025-06-01T00:00:00Z"}),
                "2025-06-01T00:00:00Z",
            ),
        ];
        for (times, want) in cases {
            let got = last_time(&event("e", times.clone())).map(|t| t.to_string());
            let want: jiff::Timestamp = want.parse().unwrap();
            assert_eq!(got, Some(want.to_string()), "{times}");
        }
        assert_eq!(last_time(&json!({"metadata": {"name": "x"}})), None);
    }

    #[test]
    fn only_old_events_expire_oldest_first_and_bounded() {
        let now: jiff::Timestamp = "2026-01-01T02:00:00Z".parse().unwrap();
        let ttl = Duration::from_secs(3600);
        let events = vec![
            event("recent", json!({"lastTimestamp": "2026-01-01T01:30:00Z"})),
            event("old", json!({"lastTimestamp": "2026-01-01T00:50:00Z"})),
            event("oldest", json!({})),
            event(
                "refreshed",
                json!({"firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-01T01:59:00Z"}),
            ),
            event("edge", json!({"lastTimestamp": "2026-01-01T01:00:00Z"})),
            json!({"metadata": {"name": "timeless", "namespace": "ns"}}),
        ];
        let names = |max| -> Vec<String> {
            expired(&events, now, ttl, max)
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(names(10), vec!["oldest", "old"]);
        assert_eq!(names(1), vec!["oldest"]);
        assert!(names(0).is_empty());
        let first = &expired(&events, now, ttl, 1)[0];
        assert_eq!(
            (first.namespace.as_str(), first.resource_version.as_str()),
            ("ns", "7")
        );
    }
}
