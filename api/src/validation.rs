//! Validation of objects before they are stored: decoding into the typed Kubernetes
//! structs (a type error is a 400), then every Kubernetes rule Keelson enforces, collected
//! into one 422 Invalid with a cause per violation; plus the name, label and quantity checks
//! other modules share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EndpointPort, Endpoints, Event, Namespace, Node, Pod, PodSpec,
    PodTemplateSpec, Probe, ReplicationController, Secret, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaLabelSelector, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::resources::Resource;
use crate::selectors::LabelSelector;
use crate::status::{go_quote, Cause, StatusError};

/// Longest DNS-1123 or DNS-1035 label (namespace names, container names).
pub const DNS1123_LABEL_MAX_CHARS: usize = 63;
/// Longest DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX_CHARS: usize = 253;
/// Longest name part of a qualified name (label keys).
pub const QUALIFIED_NAME_MAX_CHARS: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_CHARS: usize = 63;
/// Longest IANA service name (named ports).
pub const PORT_NAME_MAX_CHARS: usize = 15;
/// Most bytes all annotations of one object may hold (keys and values).
pub const ANNOTATIONS_TOTAL_MAX_BYTES: usize = 256 * 1024;
/// Most bytes a ConfigMap's or Secret's data may hold.
pub const CONFIG_DATA_MAX_BYTES: usize = 1024 * 1024;
/// The largest value of an `int32` field such as `activeDeadlineSeconds` upper bound.
const INT32_MAX: i64 = 2_147_483_647;

const FIELD_IMMUTABLE: &str = "field is immutable";
const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];
const IP_ERROR: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// Errors from parsing a resource quantity.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// The text does not have the shape of a quantity.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The numeric part does not parse.
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not one Kubernetes knows.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// A Kubernetes resource quantity ("100m", "1", "1.5", "128Mi", "1G", "1e3"), held as
/// thousandths rounded up (as Kubernetes rounds "0.1m" to "1m"), saturating far beyond
/// anything real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    milli: i128,
}

/// Most significant digits of a quantity kept exactly (more only scale the value).
const QUANTITY_DIGITS_MAX: usize = 36;

/// `mantissa × 10^exponent`, rounded up, saturating at `i128::MAX`.
fn scale_pow10(mantissa: i128, exponent: i32, inexact: bool) -> i128 {
    if mantissa == 0 {
        return 0;
    }
    if exponent >= 0 {
        u32::try_from(exponent)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
            .and_then(|scale| mantissa.checked_mul(scale))
            .unwrap_or(i128::MAX)
    } else {
        match 10i128.checked_pow(exponent.unsigned_abs()) {
            Some(scale) if mantissa % scale != 0 || inexact => mantissa / scale + 1,
            Some(scale) => mantissa / scale,
            None => 1,
        }
    }
}

impl Quantity {
    /// Parses Kubernetes' quantity syntax.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if number_len == 0 {
            return Err(QuantityError::Format);
        }
        let (number, suffix) = rest.split_at(number_len);
        let suffix_ok = suffix
            .bytes()
            .all(|b| b"eEinumkKMGTP+-0123456789".contains(&b));
        if !suffix_ok {
            return Err(QuantityError::Format);
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
            return Err(QuantityError::Numeric);
        }
        // Binary multiplier (power of 1024) and decimal exponent of the suffix.
        let (binary_power, decimal_exponent): (u32, i32) = match suffix {
            "" => (0, 0),
            "Ki" => (1, 0),
            "Mi" => (2, 0),
            "Gi" => (3, 0),
            "Ti" => (4, 0),
            "Pi" => (5, 0),
            "Ei" => (6, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            s if s.starts_with(['e', 'E']) => {
                let exponent = &s[1..];
                let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError::Suffix);
                }
                let fallback = if exponent.starts_with('-') {
                    -1000
                } else {
                    1000
                };
                (
                    0,
                    exponent
                        .parse::<i32>()
                        .unwrap_or(fallback)
                        .clamp(-1000, 1000),
                )
            }
            _ => return Err(QuantityError::Suffix),
        };
        // value = digits × 1024^binary_power × 10^(decimal_exponent − fraction.len()), in thousandths.
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        let fraction_len = i32::try_from(fraction.len()).unwrap_or(i32::MAX);
        let mut exponent = decimal_exponent
            .saturating_add(3)
            .saturating_sub(fraction_len);
        let mut mantissa: i128 = 0;
        let mut inexact = false;
        for (i, b) in digits.bytes().enumerate() {
            if i >= QUANTITY_DIGITS_MAX {
                // Beyond i128 precision: the remaining digits only scale the value.
                exponent = exponent.saturating_add(1);
                inexact |= b != b'0';
            } else {
                mantissa = mantissa * 10 + i128::from(b - b'0');
            }
        }
        let milli = match mantissa.checked_mul(1i128 << (10 * binary_power)) {
            Some(mantissa) => scale_pow10(mantissa, exponent, inexact),
            None => i128::MAX,
        };
        Ok(Self {
            milli: if negative { -milli } else { milli },
        })
    }

    /// The value in thousandths (e.g. millicores), rounded up.
    pub fn milli_value(&self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded up (e.g. bytes).
    pub fn value(&self) -> i128 {
        let whole = self.milli / 1000;
        if self.milli % 1000 > 0 {
            whole + 1
        } else {
            whole
        }
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.milli < 0
    }

    /// Whether the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }
}

// ---------------------------------------------------------------------------------------
// Name checks, with Kubernetes' messages (k8s.io/apimachinery/pkg/util/validation).

fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut out = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{format}')"));
    out
}

fn max_len_error(max_chars: usize) -> String {
    format!("must be no more than {max_chars} characters")
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            is_alnum_lower(*first)
                && is_alnum_lower(*last)
                && bytes.iter().all(|b| is_alnum_lower(*b) || *b == b'-')
        }
        _ => false,
    }
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

/// Checks a DNS-1123 label (namespace names, container and port names); empty when valid.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_CHARS {
        errors.push(max_len_error(DNS1123_LABEL_MAX_CHARS));
    }
    if !matches_dns1123_label(value) {
        errors.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errors
}

/// Checks a DNS-1123 subdomain (most object names); empty when valid.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_CHARS {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_CHARS));
    }
    if !value.split('.').all(matches_dns1123_label) {
        errors.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    errors
}

/// Checks a DNS-1035 label (service names); empty when valid.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_CHARS {
        errors.push(max_len_error(DNS1123_LABEL_MAX_CHARS));
    }
    if !(matches_dns1123_label(value)
        && value.as_bytes().first().is_some_and(u8::is_ascii_lowercase))
    {
        errors.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERROR: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Checks a qualified name (label and annotation keys): `[prefix/]name`, the prefix a DNS
/// subdomain; empty when valid.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|e| format!("prefix part {e}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERROR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_CHARS {
        errors.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_CHARS)
        ));
    }
    if !matches_qualified_name(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERROR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// Checks a label value (empty, or a qualified name part of at most 63 characters); empty
/// when valid.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX_CHARS {
        errors.push(max_len_error(LABEL_VALUE_MAX_CHARS));
    }
    if !value.is_empty() && !matches_qualified_name(value) {
        errors.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// Checks a ConfigMap or Secret key (`[-._a-zA-Z0-9]+`, not `.` or `..`); empty when valid.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_CHARS {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_CHARS));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        errors.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errors.push("must not be '.'".to_owned());
    } else if value == ".." {
        errors.push("must not be '..'".to_owned());
    } else if value.starts_with("..") {
        errors.push("must not start with '..'".to_owned());
    }
    errors
}

/// Checks a port number (1–65535); empty when valid.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_owned()]
    }
}

/// Checks a port name (an IANA service name); empty when valid.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if port.len() > PORT_NAME_MAX_CHARS {
        errors.push(max_len_error(PORT_NAME_MAX_CHARS));
    }
    if port.is_empty() || !port.bytes().all(|b| is_alnum_lower(b) || b == b'-') {
        errors.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if !port.bytes().any(|b| b.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_owned());
    }
    if port.contains("--") {
        errors.push("must not contain consecutive hyphens".to_owned());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_owned());
    }
    errors
}

fn is_valid_cidr(value: &str) -> bool {
    let Some((ip, prefix)) = value.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(prefix)) = (ip.parse::<IpAddr>(), prefix.parse::<u8>()) else {
        return false;
    };
    prefix <= if ip.is_ipv4() { 32 } else { 128 }
}

// ---------------------------------------------------------------------------------------
// Decoding with the path of the first error and of every unknown field.

mod tracked {
    //! A deserializer over `&serde_json::Value` that remembers where decoding failed and
    //! which fields the typed struct ignored.

    use std::cell::RefCell;

    use serde::de::value::BorrowedStrDeserializer;
    use serde::de::{
        self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
    };
    use serde_json::{Error, Value};

    #[derive(Clone, Copy)]
    enum Path<'a> {
        Root,
        Key(&'a Path<'a>, &'a str),
        Index(&'a Path<'a>, usize),
    }

    impl Path<'_> {
        fn render(&self) -> String {
            match self {
                Path::Root => String::new(),
                Path::Key(parent, key) => {
                    let parent = parent.render();
                    if parent.is_empty() {
                        (*key).to_owned()
                    } else {
                        format!("{parent}.{key}")
                    }
                }
                Path::Index(parent, index) => format!("{}[{index}]", parent.render()),
            }
        }
    }

    #[derive(Default)]
    struct Record {
        error_path: RefCell<Option<String>>,
        unknown: RefCell<Vec<String>>,
    }

    struct Tracked<'de, 'p> {
        value: &'de Value,
        path: &'p Path<'p>,
        record: &'p Record,
    }

    /// Decodes `value`; on failure the error names the path (`spec.containers[0].ports`).
    /// Also returns the paths of fields the type does not know.
    pub(super) fn from_value<T: DeserializeOwned>(
        value: &Value,
    ) -> (Result<T, String>, Vec<String>) {
        let record = Record::default();
        let root = Path::Root;
        let result = T::deserialize(Tracked {
            value,
            path: &root,
            record: &record,
        });
        let unknown = record.unknown.take();
        let result = result.map_err(|error| match record.error_path.take() {
            Some(path) if !path.is_empty() => format!("{path}: {error}"),
            _ => error.to_string(),
        });
        (result, unknown)
    }

    impl<'de> Tracked<'de, '_> {
        fn note<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
            if result.is_err() {
                let mut slot = self.record.error_path.borrow_mut();
                if slot.is_none() {
                    *slot = Some(self.path.render());
                }
            }
            result
        }

        /// Objects and arrays are walked with tracking; scalars go to serde_json.
        fn walk<V: Visitor<'de>>(
            self,
            visitor: V,
            scalar: impl FnOnce(&'de Value, V) -> Result<V::Value, Error>,
        ) -> Result<V::Value, Error> {
            let result = match self.value {
                Value::Object(map) => visitor.visit_map(TrackedMap {
                    iter: map.iter(),
                    pending: None,
                    path: self.path,
                    record: self.record,
                }),
                Value::Array(items) => visitor.visit_seq(TrackedSeq {
                    iter: items.iter().enumerate(),
                    path: self.path,
                    record: self.record,
                }),
                other => scalar(other, visitor),
            };
            self.note(result)
        }
    }

    macro_rules! forward {
        ($($method:ident),* $(,)?) => {$(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.walk(visitor, |value, visitor| <&'de Value as Deserializer<'de>>::$method(value, visitor))
            }
        )*};
    }

    impl<'de> Deserializer<'de> for Tracked<'de, '_> {
        type Error = Error;

        forward!(
            deserialize_any,
            deserialize_bool,
            deserialize_i8,
            deserialize_i16,
            deserialize_i32,
            deserialize_i64,
            deserialize_i128,
            deserialize_u8,
            deserialize_u16,
            deserialize_u32,
            deserialize_u64,
            deserialize_u128,
            deserialize_f32,
            deserialize_f64,
            deserialize_char,
            deserialize_str,
            deserialize_string,
            deserialize_bytes,
            deserialize_byte_buf,
            deserialize_unit,
            deserialize_seq,
            deserialize_map,
            deserialize_identifier,
        );

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            if self.value.is_null() {
                visitor.visit_none()
            } else {
                visitor.visit_some(self)
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.walk(visitor, |value, visitor| {
                Deserializer::deserialize_unit_struct(value, name, visitor)
            })
        }

        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.walk(visitor, |value, visitor| {
                Deserializer::deserialize_tuple(value, len, visitor)
            })
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.walk(visitor, |value, visitor| {
                Deserializer::deserialize_tuple_struct(value, name, len, visitor)
            })
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.walk(visitor, |value, visitor| {
                Deserializer::deserialize_struct(value, name, fields, visitor)
            })
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            let result = Deserializer::deserialize_enum(self.value, name, variants, visitor);
            self.note(result)
        }

        /// The typed structs skip fields they do not know with `IgnoredAny`: record them.
        fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.record.unknown.borrow_mut().push(self.path.render());
            visitor.visit_unit()
        }
    }

    struct TrackedMap<'de, 'p> {
        iter: serde_json::map::Iter<'de>,
        pending: Option<(&'de str, &'de Value)>,
        path: &'p Path<'p>,
        record: &'p Record,
    }

    impl<'de> MapAccess<'de> for TrackedMap<'de, '_> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.iter.next() {
                Some((key, value)) => {
                    self.pending = Some((key.as_str(), value));
                    seed.deserialize(BorrowedStrDeserializer::<Error>::new(key))
                        .map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let Some((key, value)) = self.pending.take() else {
                return Err(de::Error::custom("value requested before its key"));
            };
            let path = Path::Key(self.path, key);
            seed.deserialize(Tracked {
                value,
                path: &path,
                record: self.record,
            })
        }
    }

    struct TrackedSeq<'de, 'p> {
        iter: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
        path: &'p Path<'p>,
        record: &'p Record,
    }

    impl<'de> SeqAccess<'de> for TrackedSeq<'de, '_> {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            match self.iter.next() {
                Some((index, value)) => {
                    let path = Path::Index(self.path, index);
                    seed.deserialize(Tracked {
                        value,
                        path: &path,
                        record: self.record,
                    })
                    .map(Some)
                }
                None => Ok(None),
            }
        }
    }
}

/// An object decoded into its typed struct.
enum Typed {
    Pod(Box<Pod>),
    Service(Box<Service>),
    ReplicationController(Box<ReplicationController>),
    ReplicaSet(Box<ReplicaSet>),
    Deployment(Box<Deployment>),
    ConfigMap(Box<ConfigMap>),
    Secret(Box<Secret>),
    Namespace(Box<Namespace>),
    Node(Box<Node>),
    Event(Box<Event>),
    Endpoints(Box<Endpoints>),
    ServiceAccount(Box<ServiceAccount>),
    Lease(Box<Lease>),
}

impl Typed {
    fn metadata(&self) -> &ObjectMeta {
        match self {
            Typed::Pod(o) => &o.metadata,
            Typed::Service(o) => &o.metadata,
            Typed::ReplicationController(o) => &o.metadata,
            Typed::ReplicaSet(o) => &o.metadata,
            Typed::Deployment(o) => &o.metadata,
            Typed::ConfigMap(o) => &o.metadata,
            Typed::Secret(o) => &o.metadata,
            Typed::Namespace(o) => &o.metadata,
            Typed::Node(o) => &o.metadata,
            Typed::Event(o) => &o.metadata,
            Typed::Endpoints(o) => &o.metadata,
            Typed::ServiceAccount(o) => &o.metadata,
            Typed::Lease(o) => &o.metadata,
        }
    }
}

fn cannot_handle(resource: &Resource, data_kind: &str, detail: &str) -> StatusError {
    StatusError::bad_request(format!(
        "{data_kind} in version {} cannot be handled as a {}: {detail}",
        go_quote(resource.version),
        resource.kind
    ))
}

/// Checks `apiVersion` and `kind` (when present) against the resource, as a 400.
fn check_type_meta(resource: &Resource, obj: &Value) -> Result<(), StatusError> {
    let Some(map) = obj.as_object() else {
        return Err(cannot_handle(
            resource,
            resource.kind,
            "the request body is not a JSON object",
        ));
    };
    let expected_version = resource.api_version();
    if let Some(Value::String(version)) = map.get("apiVersion") {
        if !version.is_empty() && *version != expected_version {
            return Err(StatusError::bad_request(format!(
                "the API version in the data ({version}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    if let Some(Value::String(kind)) = map.get("kind") {
        if !kind.is_empty() && kind != resource.kind {
            return Err(cannot_handle(
                resource,
                kind,
                &format!(
                    "the kind in the data ({kind}) does not match the expected kind ({})",
                    resource.kind
                ),
            ));
        }
    }
    Ok(())
}

macro_rules! decode_kinds {
    ($resource:expr, $obj:expr, $(($group:literal, $kind:literal) => $variant:ident),* $(,)?) => {
        match ($resource.group, $resource.kind) {
            $(($group, $kind) => {
                let (result, unknown) = tracked::from_value($obj);
                (result.map(|typed| Typed::$variant(Box::new(typed))), unknown)
            })*
            _ => (Err(format!("no type is registered for {}", $resource.kind)), Vec::new()),
        }
    };
}

/// Decodes an object of `resource`: the typed object, or the 400 Kubernetes answers; and the
/// paths of unknown fields.
fn decode(resource: &Resource, obj: &Value) -> (Result<Typed, StatusError>, Vec<String>) {
    if let Err(error) = check_type_meta(resource, obj) {
        return (Err(error), Vec::new());
    }
    let (result, unknown) = decode_kinds!(resource, obj,
        ("", "Pod") => Pod,
        ("", "Service") => Service,
        ("", "ReplicationController") => ReplicationController,
        ("apps", "ReplicaSet") => ReplicaSet,
        ("apps", "Deployment") => Deployment,
        ("", "ConfigMap") => ConfigMap,
        ("", "Secret") => Secret,
        ("", "Namespace") => Namespace,
        ("", "Node") => Node,
        ("", "Event") => Event,
        ("", "Endpoints") => Endpoints,
        ("", "ServiceAccount") => ServiceAccount,
        ("coordination.k8s.io", "Lease") => Lease,
    );
    (
        result.map_err(|message| cannot_handle(resource, resource.kind, &message)),
        unknown,
    )
}

/// The JSON paths of fields in `obj` that the typed struct of `resource` does not know
/// (dropped by a round trip), sorted: `spec.foo`, `spec.containers[0].bar`. For
/// `fieldValidation=Strict` (see [`strict_decoding_error`]) and `Warn`.
pub fn unknown_fields(resource: &Resource, obj: &Value) -> Vec<String> {
    check(resource, obj).unknown
}

/// An object of one write decoded into its typed struct once, for every check of that
/// write: its unknown fields (for `fieldValidation`) and its validation.
pub struct Checked {
    typed: Result<Typed, StatusError>,
    unknown: Vec<String>,
}

/// Decodes `obj` of `resource` for [`Checked`]'s checks.
pub fn check(resource: &Resource, obj: &Value) -> Checked {
    let (typed, mut unknown) = decode(resource, obj);
    unknown.sort();
    unknown.dedup();
    Checked { typed, unknown }
}

impl Checked {
    /// The JSON paths of the fields the typed struct does not know ([`unknown_fields`]).
    pub fn unknown_fields(&self) -> &[String] {
        &self.unknown
    }

    /// [`validate`], for the object this was decoded from.
    pub fn validate(self, resource: &Resource, obj: &Value) -> Result<(), StatusError> {
        let typed = self.typed?;
        let mut causes = Vec::new();
        validate_typed(&mut causes, resource, &typed, obj);
        finish(resource, &typed, causes)
    }

    /// [`validate_update`], for the `new` object this was decoded from.
    pub fn validate_update(
        self,
        resource: &Resource,
        old: &Value,
        new: &Value,
    ) -> Result<(), StatusError> {
        let new_typed = self.typed?;
        let mut causes = Vec::new();
        validate_typed(&mut causes, resource, &new_typed, new);
        // A stored object that no longer decodes cannot be compared: validate `new` alone.
        if let Ok(old_typed) = decode(resource, old).0 {
            validate_meta_update(&mut causes, old_typed.metadata(), new_typed.metadata());
            match (&old_typed, &new_typed) {
                (Typed::Pod(o), Typed::Pod(n)) => validate_pod_update(&mut causes, o, n),
                (Typed::Service(o), Typed::Service(n)) => {
                    validate_service_update(&mut causes, o, n)
                }
                (Typed::ReplicaSet(o), Typed::ReplicaSet(n)) => {
                    validate_selector_update(&mut causes, &o.spec.selector, &n.spec.selector);
                }
                (Typed::Deployment(o), Typed::Deployment(n)) => {
                    validate_selector_update(&mut causes, &o.spec.selector, &n.spec.selector);
                }
                (Typed::ConfigMap(o), Typed::ConfigMap(n)) => {
                    validate_config_map_update(&mut causes, o, n)
                }
                (Typed::Secret(o), Typed::Secret(n)) => validate_secret_update(&mut causes, o, n),
                (Typed::Node(o), Typed::Node(n)) => validate_node_update(&mut causes, o, n),
                _ => {}
            }
        }
        finish(resource, &new_typed, causes)
    }

    /// Validates a write through the `status` subresource, whose object is the stored one
    /// with only its status (and resourceVersion) replaced: the status must decode into the
    /// typed struct; the rest was validated when it was written, and is not validated again,
    /// as Kubernetes' status strategies validate only what a status write may change (a
    /// kubelet's status report does not fail for a spec that later rules would refuse).
    pub fn validate_status_update(self) -> Result<(), StatusError> {
        self.typed.map(|_| ())
    }
}

/// The 400 Kubernetes answers for unknown fields under `fieldValidation=Strict`:
/// `Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.foo"`.
pub fn strict_decoding_error(resource: &Resource, unknown: &[String]) -> StatusError {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {}", go_quote(f)))
        .collect();
    cannot_handle(
        resource,
        resource.kind,
        &format!("strict decoding error: {}", fields.join(", ")),
    )
}

// ---------------------------------------------------------------------------------------
// Validation.

type Causes = Vec<Cause>;

fn invalid_each(causes: &mut Causes, field: &str, value: &str, messages: Vec<String>) {
    for message in messages {
        causes.push(Cause::invalid(field, value, &message));
    }
}

fn non_negative(causes: &mut Causes, field: &str, value: Option<i64>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        causes.push(Cause::invalid(
            field,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

fn one_of(causes: &mut Causes, field: &str, value: Option<&String>, supported: &[&str]) {
    match value {
        Some(v) if v.is_empty() => causes.push(Cause::required(field, "")),
        Some(v) if !supported.contains(&v.as_str()) => {
            causes.push(Cause::not_supported(field, v.as_str(), supported))
        }
        _ => {}
    }
}

fn validate_labels(causes: &mut Causes, labels: Option<&BTreeMap<String, String>>, field: &str) {
    for (key, value) in labels.into_iter().flatten() {
        invalid_each(causes, field, key, is_qualified_name(key));
        invalid_each(causes, field, value, is_valid_label_value(value));
    }
}

fn validate_annotations(
    causes: &mut Causes,
    annotations: Option<&BTreeMap<String, String>>,
    field: &str,
) {
    let mut total_bytes = 0usize;
    for (key, value) in annotations.into_iter().flatten() {
        invalid_each(
            causes,
            field,
            key,
            is_qualified_name(&key.to_ascii_lowercase()),
        );
        total_bytes += key.len() + value.len();
    }
    if total_bytes > ANNOTATIONS_TOTAL_MAX_BYTES {
        causes.push(Cause::too_long(field, ANNOTATIONS_TOTAL_MAX_BYTES));
    }
}

/// Which names a kind accepts.
#[derive(Clone, Copy)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
}

impl NameRule {
    fn of(resource: &Resource) -> Self {
        match (resource.group, resource.kind) {
            ("", "Namespace") => NameRule::Label,
            ("", "Service") => NameRule::Dns1035,
            _ => NameRule::Subdomain,
        }
    }

    fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Label => is_dns1123_label(name),
            NameRule::Dns1035 => is_dns1035_label(name),
        }
    }
}

fn validate_finalizer(causes: &mut Causes, field: &str, finalizer: &str) {
    let errors = is_qualified_name(finalizer);
    if !errors.is_empty() {
        invalid_each(causes, field, finalizer, errors);
    } else if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer) {
        causes.push(Cause::invalid(
            field,
            finalizer,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
}

fn validate_object_meta(causes: &mut Causes, resource: &Resource, meta: &ObjectMeta) {
    let rule = NameRule::of(resource);
    let name = meta.name.as_deref().unwrap_or_default();
    let generate_name = meta.generate_name.as_deref().unwrap_or_default();
    if name.is_empty() {
        if generate_name.is_empty() {
            causes.push(Cause::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        invalid_each(causes, "metadata.name", name, rule.check(name));
    }
    if !generate_name.is_empty() {
        // A prefix may end in '-': check it as Kubernetes does, with the dash masked.
        let masked = match generate_name.strip_suffix('-') {
            Some(stem) if !stem.is_empty() => format!("{stem}a"),
            _ => generate_name.to_owned(),
        };
        invalid_each(
            causes,
            "metadata.generateName",
            generate_name,
            rule.check(&masked),
        );
    }
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    if resource.namespaced {
        if namespace.is_empty() {
            causes.push(Cause::required("metadata.namespace", ""));
        } else {
            invalid_each(
                causes,
                "metadata.namespace",
                namespace,
                is_dns1123_label(namespace),
            );
        }
    } else if !namespace.is_empty() {
        causes.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    non_negative(causes, "metadata.generation", meta.generation);
    validate_labels(causes, meta.labels.as_ref(), "metadata.labels");
    validate_annotations(causes, meta.annotations.as_ref(), "metadata.annotations");
    let mut controllers = Vec::new();
    for owner in meta.owner_references.iter().flatten() {
        for (field, value, what) in [
            ("apiVersion", &owner.api_version, "version"),
            ("kind", &owner.kind, "kind"),
            ("name", &owner.name, "name"),
            ("uid", &owner.uid, "uid"),
        ] {
            if value.is_empty() {
                causes.push(Cause::invalid(
                    &format!("metadata.ownerReferences.{field}"),
                    "",
                    &format!("{what} must not be empty"),
                ));
            }
        }
        if owner.controller == Some(true) {
            controllers.push(owner.name.clone());
        }
    }
    if controllers.len() > 1 {
        causes.push(Cause::invalid(
            "metadata.ownerReferences",
            serde_json::to_value(&meta.owner_references).unwrap_or(Value::Null),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    for (i, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        validate_finalizer(causes, &format!("metadata.finalizers[{i}]"), finalizer);
    }
}

fn validate_quantities(
    causes: &mut Causes,
    map: Option<&BTreeMap<String, KubeQuantity>>,
    field: &str,
) -> BTreeMap<String, Quantity> {
    let mut parsed = BTreeMap::new();
    for (name, quantity) in map.into_iter().flatten() {
        let path = format!("{field}[{name}]");
        invalid_each(causes, &path, name, is_qualified_name(name));
        match Quantity::parse(&quantity.0) {
            Ok(q) if q.is_negative() => {
                causes.push(Cause::invalid(
                    &path,
                    quantity.0.as_str(),
                    "must be greater than or equal to 0",
                ));
            }
            Ok(q) => {
                parsed.insert(name.clone(), q);
            }
            Err(_) => causes.push(Cause::invalid(&path, quantity.0.as_str(), QUANTITY_FORMAT)),
        }
    }
    parsed
}

fn validate_port_ref(causes: &mut Causes, field: &str, port: &IntOrString) {
    match port {
        IntOrString::Int(n) => {
            for message in is_valid_port_num(i64::from(*n)) {
                causes.push(Cause::invalid(field, *n, &message));
            }
        }
        IntOrString::String(name) => invalid_each(causes, field, name, is_valid_port_name(name)),
    }
}

fn validate_probe(
    causes: &mut Causes,
    probe: Option<&Probe>,
    field: &str,
    success_must_be_one: bool,
) {
    let Some(probe) = probe else {
        return;
    };
    let handlers: Vec<&str> = [
        ("exec", probe.exec.is_some()),
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("grpc", probe.grpc.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match handlers.as_slice() {
        [] => causes.push(Cause::required(field, "must specify a handler type")),
        [_] => {}
        [_, second, ..] => {
            causes.push(Cause::forbidden(
                &format!("{field}.{second}"),
                "may not specify more than 1 handler type",
            ));
        }
    }
    if let Some(http) = &probe.http_get {
        validate_port_ref(causes, &format!("{field}.httpGet.port"), &http.port);
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_port_ref(causes, &format!("{field}.tcpSocket.port"), &tcp.port);
    }
    for (name, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        non_negative(causes, &format!("{field}.{name}"), value.map(i64::from));
    }
    if success_must_be_one {
        if let Some(threshold) = probe.success_threshold.filter(|t| *t > 1) {
            causes.push(Cause::invalid(
                &format!("{field}.successThreshold"),
                threshold,
                "must be 1",
            ));
        }
    }
}

fn validate_container(
    causes: &mut Causes,
    container: &Container,
    field: &str,
    names: &mut BTreeSet<String>,
    volumes: &BTreeSet<String>,
) {
    let name_field = format!("{field}.name");
    if container.name.is_empty() {
        causes.push(Cause::required(&name_field, ""));
    } else {
        invalid_each(
            causes,
            &name_field,
            &container.name,
            is_dns1123_label(&container.name),
        );
        if !names.insert(container.name.clone()) {
            causes.push(Cause::duplicate(&name_field, container.name.as_str()));
        }
    }
    match container.image.as_deref() {
        None | Some("") => causes.push(Cause::required(&format!("{field}.image"), "")),
        Some(image) if image.trim() != image => causes.push(Cause::invalid(
            &format!("{field}.image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    one_of(
        causes,
        &format!("{field}.imagePullPolicy"),
        container.image_pull_policy.as_ref(),
        &["Always", "IfNotPresent", "Never"],
    );
    one_of(
        causes,
        &format!("{field}.terminationMessagePolicy"),
        container.termination_message_policy.as_ref(),
        &["File", "FallbackToLogsOnError"],
    );
    let mut port_names = BTreeSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let path = format!("{field}.ports[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            invalid_each(
                causes,
                &format!("{path}.name"),
                name,
                is_valid_port_name(name),
            );
            if !port_names.insert(name.to_owned()) {
                causes.push(Cause::duplicate(&format!("{path}.name"), name));
            }
        }
        if port.container_port == 0 {
            causes.push(Cause::required(&format!("{path}.containerPort"), ""));
        } else {
            for message in is_valid_port_num(i64::from(port.container_port)) {
                causes.push(Cause::invalid(
                    &format!("{path}.containerPort"),
                    port.container_port,
                    &message,
                ));
            }
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            for message in is_valid_port_num(i64::from(host_port)) {
                causes.push(Cause::invalid(
                    &format!("{path}.hostPort"),
                    host_port,
                    &message,
                ));
            }
        }
        one_of(
            causes,
            &format!("{path}.protocol"),
            port.protocol.as_ref(),
            PROTOCOLS,
        );
    }
    for (i, env) in container.env.iter().flatten().enumerate() {
        if env.name.is_empty() {
            causes.push(Cause::required(&format!("{field}.env[{i}].name"), ""));
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let path = format!("{field}.volumeMounts[{i}]");
        if mount.name.is_empty() {
            causes.push(Cause::required(&format!("{path}.name"), ""));
        } else if !volumes.contains(&mount.name) {
            causes.push(Cause::not_found(
                &format!("{path}.name"),
                mount.name.as_str(),
            ));
        }
        if mount.mount_path.is_empty() {
            causes.push(Cause::required(&format!("{path}.mountPath"), ""));
        } else if !mount_paths.insert(mount.mount_path.clone()) {
            causes.push(Cause::invalid(
                &format!("{path}.mountPath"),
                mount.mount_path.as_str(),
                "must be unique",
            ));
        }
    }
    if let Some(resources) = &container.resources {
        let limits = validate_quantities(
            causes,
            resources.limits.as_ref(),
            &format!("{field}.resources.limits"),
        );
        let requests = validate_quantities(
            causes,
            resources.requests.as_ref(),
            &format!("{field}.resources.requests"),
        );
        for (name, request) in &requests {
            if limits.get(name).is_some_and(|limit| request > limit) {
                let text = |map: &Option<BTreeMap<String, KubeQuantity>>| {
                    map.as_ref()
                        .and_then(|m| m.get(name))
                        .map(|q| q.0.clone())
                        .unwrap_or_default()
                };
                causes.push(Cause::invalid(
                    &format!("{field}.resources.requests[{name}]"),
                    text(&resources.requests),
                    &format!(
                        "must be less than or equal to {name} limit of {}",
                        text(&resources.limits)
                    ),
                ));
            }
        }
    }
    validate_probe(
        causes,
        container.liveness_probe.as_ref(),
        &format!("{field}.livenessProbe"),
        true,
    );
    validate_probe(
        causes,
        container.readiness_probe.as_ref(),
        &format!("{field}.readinessProbe"),
        false,
    );
    validate_probe(
        causes,
        container.startup_probe.as_ref(),
        &format!("{field}.startupProbe"),
        true,
    );
}

fn validate_pod_spec(causes: &mut Causes, spec: &PodSpec, field: &str) {
    let mut volume_names = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("{field}.volumes[{i}]");
        if volume.name.is_empty() {
            causes.push(Cause::required(&format!("{path}.name"), ""));
        } else {
            invalid_each(
                causes,
                &format!("{path}.name"),
                &volume.name,
                is_dns1123_label(&volume.name),
            );
            if !volume_names.insert(volume.name.clone()) {
                causes.push(Cause::duplicate(
                    &format!("{path}.name"),
                    volume.name.as_str(),
                ));
            }
        }
        let sources: Vec<String> = match serde_json::to_value(volume) {
            Ok(Value::Object(map)) => map.keys().filter(|k| *k != "name").cloned().collect(),
            _ => Vec::new(),
        };
        match sources.as_slice() {
            [] => causes.push(Cause::required(&path, "must specify a volume type")),
            [_] => {}
            [_, second, ..] => {
                causes.push(Cause::forbidden(
                    &format!("{path}.{second}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if spec.containers.is_empty() {
        causes.push(Cause::required(&format!("{field}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (i, container) in spec.containers.iter().enumerate() {
        validate_container(
            causes,
            container,
            &format!("{field}.containers[{i}]"),
            &mut names,
            &volume_names,
        );
    }
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(
            causes,
            container,
            &format!("{field}.initContainers[{i}]"),
            &mut names,
            &volume_names,
        );
    }
    one_of(
        causes,
        &format!("{field}.restartPolicy"),
        spec.restart_policy.as_ref(),
        &["Always", "OnFailure", "Never"],
    );
    one_of(
        causes,
        &format!("{field}.dnsPolicy"),
        spec.dns_policy.as_ref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if let Some(seconds) = spec
        .active_deadline_seconds
        .filter(|s| !(1..=INT32_MAX).contains(s))
    {
        causes.push(Cause::invalid(
            &format!("{field}.activeDeadlineSeconds"),
            seconds,
            &format!("must be between 1 and {INT32_MAX}, inclusive"),
        ));
    }
    non_negative(
        causes,
        &format!("{field}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
    );
    for (key, value) in [
        ("nodeName", &spec.node_name),
        ("serviceAccountName", &spec.service_account_name),
        ("schedulerName", &spec.scheduler_name),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            invalid_each(
                causes,
                &format!("{field}.{key}"),
                v,
                is_dns1123_subdomain(v),
            );
        }
    }
    for (key, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            invalid_each(causes, &format!("{field}.{key}"), v, is_dns1123_label(v));
        }
    }
    validate_labels(
        causes,
        spec.node_selector.as_ref(),
        &format!("{field}.nodeSelector"),
    );
    for (i, toleration) in spec.tolerations.iter().flatten().enumerate() {
        let path = format!("{field}.tolerations[{i}]");
        if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
            invalid_each(causes, &format!("{path}.key"), key, is_qualified_name(key));
        }
        match toleration.operator.as_deref() {
            None | Some("") | Some("Equal") => {}
            Some("Exists") => {
                if let Some(value) = toleration.value.as_deref().filter(|v| !v.is_empty()) {
                    causes.push(Cause::invalid(
                        &format!("{path}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            Some(other) => causes.push(Cause::not_supported(
                &format!("{path}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                causes.push(Cause::not_supported(
                    &format!("{path}.effect"),
                    effect,
                    &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                ));
            }
        }
    }
}

fn validate_pod(causes: &mut Causes, pod: &Pod) {
    validate_pod_spec(causes, &pod.spec.clone().unwrap_or_default(), "spec");
}

/// A meta `LabelSelector`'s own rules (`matchLabels`, `matchExpressions`).
fn validate_label_selector(causes: &mut Causes, selector: &MetaLabelSelector, field: &str) {
    validate_labels(
        causes,
        selector.match_labels.as_ref(),
        &format!("{field}.matchLabels"),
    );
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let path = format!("{field}.matchExpressions[{i}]");
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    causes.push(Cause::required(
                        &format!("{path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    causes.push(Cause::forbidden(
                        &format!("{path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => causes.push(Cause::invalid(
                &format!("{path}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        invalid_each(
            causes,
            &format!("{path}.key"),
            &expression.key,
            is_qualified_name(&expression.key),
        );
        for (j, value) in values.iter().enumerate() {
            invalid_each(
                causes,
                &format!("{path}.values[{j}]"),
                value,
                is_valid_label_value(value),
            );
        }
    }
}

/// The pod template of a workload: labels, a valid pod spec with `restartPolicy: Always`,
/// no `activeDeadlineSeconds`, and labels the selector matches.
fn validate_workload_template(
    causes: &mut Causes,
    template: Option<&PodTemplateSpec>,
    selector: Option<&LabelSelector>,
    owner_kind: &str,
) {
    let Some(template) = template else {
        causes.push(Cause::required("spec.template", ""));
        return;
    };
    let meta = template.metadata.clone().unwrap_or_default();
    validate_labels(
        causes,
        meta.labels.as_ref(),
        "spec.template.metadata.labels",
    );
    validate_annotations(
        causes,
        meta.annotations.as_ref(),
        "spec.template.metadata.annotations",
    );
    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
        let labels = meta.labels.clone().unwrap_or_default();
        if !selector.matches(&labels) {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                serde_json::to_value(&labels).unwrap_or(Value::Null),
                "`selector` does not match template `labels`",
            ));
        }
    }
    let spec = template.spec.clone().unwrap_or_default();
    validate_pod_spec(causes, &spec, "spec.template.spec");
    if let Some(policy) = spec
        .restart_policy
        .as_deref()
        .filter(|p| !p.is_empty() && *p != "Always")
    {
        if ["OnFailure", "Never"].contains(&policy) {
            causes.push(Cause::not_supported(
                "spec.template.spec.restartPolicy",
                policy,
                &["Always"],
            ));
        }
    }
    if spec.active_deadline_seconds.is_some() {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {owner_kind} is not Supported"),
        ));
    }
}

fn validate_replication_controller(causes: &mut Causes, rc: &ReplicationController) {
    let spec = rc.spec.clone().unwrap_or_default();
    non_negative(causes, "spec.replicas", spec.replicas.map(i64::from));
    non_negative(
        causes,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    let selector_map = spec.selector.clone().unwrap_or_default();
    if selector_map.is_empty() {
        causes.push(Cause::required("spec.selector", ""));
    }
    validate_labels(causes, spec.selector.as_ref(), "spec.selector");
    let selector = LabelSelector::from_map(&selector_map).ok();
    validate_workload_template(
        causes,
        spec.template.as_ref(),
        selector.as_ref(),
        "ReplicationController",
    );
}

/// An apps/v1 selector: required (`present` says whether the JSON had one: the typed
/// struct cannot tell), valid, non-empty; the parsed selector when usable.
fn validate_apps_selector(
    causes: &mut Causes,
    selector: &MetaLabelSelector,
    present: bool,
) -> Option<LabelSelector> {
    if !present {
        causes.push(Cause::required("spec.selector", ""));
        return None;
    }
    validate_label_selector(causes, selector, "spec.selector");
    let selector_value = serde_json::to_value(selector).unwrap_or(Value::Null);
    let count = selector.match_labels.as_ref().map_or(0, BTreeMap::len)
        + selector.match_expressions.as_ref().map_or(0, Vec::len);
    if count == 0 {
        causes.push(Cause::invalid(
            "spec.selector",
            selector_value,
            "empty selector is invalid for deployment",
        ));
        return None;
    }
    match LabelSelector::from_meta(selector) {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            causes.push(Cause::invalid(
                "spec.selector",
                selector_value,
                "invalid label selector",
            ));
            None
        }
    }
}

fn validate_replica_set(causes: &mut Causes, rs: &ReplicaSet, selector_present: bool) {
    let spec = &rs.spec;
    non_negative(causes, "spec.replicas", spec.replicas.map(i64::from));
    non_negative(
        causes,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    let selector = validate_apps_selector(causes, &spec.selector, selector_present);
    validate_workload_template(
        causes,
        spec.template.as_ref(),
        selector.as_ref(),
        "ReplicaSet",
    );
}

/// An `IntOrString` as an int or a percentage; `None` when malformed.
fn int_or_percent(value: &IntOrString) -> Option<(i64, bool)> {
    match value {
        IntOrString::Int(n) => Some((i64::from(*n), false)),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok().map(|n| (n, true))
        }
    }
}

fn validate_int_or_percent(
    causes: &mut Causes,
    value: Option<&IntOrString>,
    field: &str,
) -> Option<(i64, bool)> {
    let value = value?;
    match int_or_percent(value) {
        None => {
            let text = match value {
                IntOrString::String(s) => s.clone(),
                IntOrString::Int(n) => n.to_string(),
            };
            causes.push(Cause::invalid(
                field,
                text.as_str(),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ));
            None
        }
        Some((n, false)) if n < 0 => {
            causes.push(Cause::invalid(
                field,
                n,
                "must be greater than or equal to 0",
            ));
            None
        }
        parsed => parsed,
    }
}

fn validate_deployment(causes: &mut Causes, deployment: &Deployment, selector_present: bool) {
    let spec = &deployment.spec;
    non_negative(causes, "spec.replicas", spec.replicas.map(i64::from));
    non_negative(
        causes,
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
    );
    non_negative(
        causes,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        non_negative(
            causes,
            "spec.progressDeadlineSeconds",
            Some(i64::from(deadline)),
        );
        if deadline >= 0 && deadline <= spec.min_ready_seconds.unwrap_or(0) {
            causes.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(strategy) = &spec.strategy {
        match strategy.type_.as_deref() {
            Some("Recreate") => {
                if strategy.rolling_update.is_some() {
                    causes.push(Cause::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            Some("RollingUpdate") | None => {
                if let Some(rolling) = &strategy.rolling_update {
                    let field = "spec.strategy.rollingUpdate";
                    let unavailable = validate_int_or_percent(
                        causes,
                        rolling.max_unavailable.as_ref(),
                        &format!("{field}.maxUnavailable"),
                    );
                    let surge = validate_int_or_percent(
                        causes,
                        rolling.max_surge.as_ref(),
                        &format!("{field}.maxSurge"),
                    );
                    if unavailable.is_some_and(|(n, _)| n == 0)
                        && surge.is_some_and(|(n, _)| n == 0)
                    {
                        causes.push(Cause::invalid(
                            &format!("{field}.maxUnavailable"),
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                    if let Some((n, true)) = unavailable.filter(|(n, _)| *n > 100) {
                        causes.push(Cause::invalid(
                            &format!("{field}.maxUnavailable"),
                            format!("{n}%"),
                            "must not be greater than 100%",
                        ));
                    }
                }
            }
            Some(other) => {
                causes.push(Cause::not_supported(
                    "spec.strategy.type",
                    other,
                    &["Recreate", "RollingUpdate"],
                ));
            }
        }
    }
    let selector = validate_apps_selector(causes, &spec.selector, selector_present);
    validate_workload_template(
        causes,
        Some(&spec.template),
        selector.as_ref(),
        "ReplicaSet",
    );
}

fn validate_service(causes: &mut Causes, service: &Service) {
    let spec = service.spec.clone().unwrap_or_default();
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let supported_types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !supported_types.contains(&service_type) {
        causes.push(Cause::not_supported(
            "spec.type",
            service_type,
            &supported_types,
        ));
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let headless = cluster_ip == "None";
    if service_type == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => causes.push(Cause::required("spec.externalName", "")),
            Some(name) => {
                invalid_each(
                    causes,
                    "spec.externalName",
                    name,
                    is_dns1123_subdomain(name.trim_end_matches('.')),
                );
            }
        }
        if !cluster_ip.is_empty() {
            causes.push(Cause::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
    } else if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        causes.push(Cause::invalid("spec.clusterIPs[0]", cluster_ip, IP_ERROR));
    }
    let ports = spec.ports.clone().unwrap_or_default();
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        causes.push(Cause::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    let mut port_protocols = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match port.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                causes.push(Cause::required(&format!("{path}.name"), ""))
            }
            None | Some("") => {}
            Some(name) => {
                invalid_each(
                    causes,
                    &format!("{path}.name"),
                    name,
                    is_dns1123_label(name),
                );
                if !names.insert(name.to_owned()) {
                    causes.push(Cause::duplicate(&format!("{path}.name"), name));
                }
            }
        }
        for message in is_valid_port_num(i64::from(port.port)) {
            causes.push(Cause::invalid(&format!("{path}.port"), port.port, &message));
        }
        one_of(
            causes,
            &format!("{path}.protocol"),
            port.protocol.as_ref(),
            PROTOCOLS,
        );
        match &port.target_port {
            Some(IntOrString::Int(0)) | None => {}
            Some(IntOrString::String(s)) if s.is_empty() => {}
            Some(target) => validate_port_ref(causes, &format!("{path}.targetPort"), target),
        }
        if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
            if service_type == "ClusterIP" || service_type == "ExternalName" {
                causes.push(Cause::forbidden(
                    &format!("{path}.nodePort"),
                    &format!("may not be used when `type` is '{service_type}'"),
                ));
            } else {
                for message in is_valid_port_num(i64::from(node_port)) {
                    causes.push(Cause::invalid(
                        &format!("{path}.nodePort"),
                        node_port,
                        &message,
                    ));
                }
            }
        }
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
        if !port_protocols.insert((port.port, protocol.clone())) {
            causes.push(Cause::duplicate(
                &path,
                serde_json::json!({"port": port.port, "protocol": protocol}),
            ));
        }
    }
    one_of(
        causes,
        "spec.sessionAffinity",
        spec.session_affinity.as_ref(),
        &["ClientIP", "None"],
    );
    validate_labels(causes, spec.selector.as_ref(), "spec.selector");
    if let Some(policy) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        if service_type != "NodePort" && service_type != "LoadBalancer" {
            causes.push(Cause::invalid(
                "spec.externalTrafficPolicy",
                policy,
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        } else if !["Cluster", "Local"].contains(&policy) {
            causes.push(Cause::not_supported(
                "spec.externalTrafficPolicy",
                policy,
                &["Cluster", "Local"],
            ));
        }
    }
    one_of(
        causes,
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_ref(),
        &["Cluster", "Local"],
    );
}

fn validate_config_keys<'a>(
    causes: &mut Causes,
    keys: impl Iterator<Item = &'a String>,
    field: &str,
) {
    for key in keys {
        invalid_each(
            causes,
            &format!("{field}[{key}]"),
            key,
            is_config_map_key(key),
        );
    }
}

fn validate_config_map(causes: &mut Causes, config_map: &ConfigMap) {
    let data = config_map.data.clone().unwrap_or_default();
    let binary = config_map.binary_data.clone().unwrap_or_default();
    validate_config_keys(causes, data.keys(), "data");
    validate_config_keys(causes, binary.keys(), "binaryData");
    let mut total_bytes: usize = data.values().map(String::len).sum();
    for (key, value) in &binary {
        total_bytes += value.0.len();
        if data.contains_key(key) {
            causes.push(Cause::invalid(
                &format!("binaryData[{key}]"),
                key.as_str(),
                "duplicate of key present in data",
            ));
        }
    }
    if total_bytes > CONFIG_DATA_MAX_BYTES {
        causes.push(Cause::too_long("", CONFIG_DATA_MAX_BYTES));
    }
}

fn validate_secret(causes: &mut Causes, secret: &Secret) {
    let data = secret.data.clone().unwrap_or_default();
    let string_data = secret.string_data.clone().unwrap_or_default();
    validate_config_keys(causes, data.keys(), "data");
    validate_config_keys(causes, string_data.keys(), "stringData");
    let total_bytes: usize = data.values().map(|v| v.0.len()).sum::<usize>()
        + string_data.values().map(String::len).sum::<usize>();
    if total_bytes > CONFIG_DATA_MAX_BYTES {
        causes.push(Cause::too_long("data", CONFIG_DATA_MAX_BYTES));
    }
    let has = |key: &str| data.contains_key(key) || string_data.contains_key(key);
    let require = |causes: &mut Causes, key: &str| {
        if !has(key) {
            causes.push(Cause::required(&format!("data[{key}]"), ""));
        }
    };
    match secret.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotation))
                .is_some_and(|v| !v.is_empty());
            if !named {
                causes.push(Cause::required(
                    &format!("metadata.annotations[{annotation}]"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => require(causes, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" => require(causes, ".dockerconfigjson"),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            require(causes, "username");
            require(causes, "password");
        }
        "kubernetes.io/ssh-auth" => require(causes, "ssh-privatekey"),
        "kubernetes.io/tls" => {
            require(causes, "tls.crt");
            require(causes, "tls.key");
        }
        "" => causes.push(Cause::required("type", "")),
        _ => {}
    }
}

fn validate_namespace(causes: &mut Causes, namespace: &Namespace) {
    let finalizers = namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    for (i, finalizer) in finalizers.iter().enumerate() {
        validate_finalizer(causes, &format!("spec.finalizers[{i}]"), finalizer);
    }
}

fn validate_node(causes: &mut Causes, node: &Node) {
    let spec = node.spec.clone().unwrap_or_default();
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        if !is_valid_cidr(cidr) {
            causes.push(Cause::invalid(
                "spec.podCIDR",
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        let path = format!("spec.taints[{i}]");
        invalid_each(
            causes,
            &format!("{path}.key"),
            &taint.key,
            is_qualified_name(&taint.key),
        );
        let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        if taint.effect.is_empty() {
            causes.push(Cause::required(&format!("{path}.effect"), ""));
        } else if !effects.contains(&taint.effect.as_str()) {
            causes.push(Cause::not_supported(
                &format!("{path}.effect"),
                taint.effect.as_str(),
                &effects,
            ));
        }
    }
}

fn validate_event(causes: &mut Causes, event: &Event) {
    let namespace = event.metadata.namespace.as_deref().unwrap_or_default();
    let involved = event
        .involved_object
        .namespace
        .as_deref()
        .unwrap_or_default();
    if event.event_time.is_none() {
        let mismatch = if involved.is_empty() {
            !namespace.is_empty() && namespace != "default"
        } else {
            namespace != involved
        };
        if mismatch {
            causes.push(Cause::invalid(
                "involvedObject.namespace",
                involved,
                "does not match event.namespace",
            ));
        }
    }
    if let Some(event_type) = event.type_.as_deref().filter(|t| !t.is_empty()) {
        if !["Normal", "Warning"].contains(&event_type) {
            causes.push(Cause::not_supported(
                "type",
                event_type,
                &["Normal", "Warning"],
            ));
        }
    }
}

fn validate_endpoint_ports(causes: &mut Causes, ports: &[EndpointPort], field: &str) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("{field}[{i}]");
        match port.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                causes.push(Cause::required(&format!("{path}.name"), ""))
            }
            None | Some("") => {}
            Some(name) => {
                invalid_each(
                    causes,
                    &format!("{path}.name"),
                    name,
                    is_dns1123_label(name),
                );
                if !names.insert(name.to_owned()) {
                    causes.push(Cause::duplicate(&format!("{path}.name"), name));
                }
            }
        }
        for message in is_valid_port_num(i64::from(port.port)) {
            causes.push(Cause::invalid(&format!("{path}.port"), port.port, &message));
        }
        one_of(
            causes,
            &format!("{path}.protocol"),
            port.protocol.as_ref(),
            PROTOCOLS,
        );
    }
}

fn validate_endpoints(causes: &mut Causes, endpoints: &Endpoints) {
    for (i, subset) in endpoints.subsets.iter().flatten().enumerate() {
        for (list, addresses) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, address) in addresses.iter().flatten().enumerate() {
                if address.ip.parse::<IpAddr>().is_err() {
                    causes.push(Cause::invalid(
                        &format!("subsets[{i}].{list}[{j}].ip"),
                        address.ip.as_str(),
                        IP_ERROR,
                    ));
                }
            }
        }
        validate_endpoint_ports(
            causes,
            subset.ports.as_deref().unwrap_or_default(),
            &format!("subsets[{i}].ports"),
        );
    }
}

fn validate_lease(causes: &mut Causes, lease: &Lease) {
    let spec = lease.spec.clone().unwrap_or_default();
    if let Some(duration) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            duration,
            "must be greater than 0",
        ));
    }
    non_negative(
        causes,
        "spec.leaseTransitions",
        spec.lease_transitions.map(i64::from),
    );
}

fn validate_typed(causes: &mut Causes, resource: &Resource, typed: &Typed, raw: &Value) {
    validate_object_meta(causes, resource, typed.metadata());
    let selector_present = raw.pointer("/spec/selector").is_some_and(|s| !s.is_null());
    match typed {
        Typed::Pod(pod) => validate_pod(causes, pod),
        Typed::Service(service) => validate_service(causes, service),
        Typed::ReplicationController(rc) => validate_replication_controller(causes, rc),
        Typed::ReplicaSet(rs) => validate_replica_set(causes, rs, selector_present),
        Typed::Deployment(deployment) => validate_deployment(causes, deployment, selector_present),
        Typed::ConfigMap(config_map) => validate_config_map(causes, config_map),
        Typed::Secret(secret) => validate_secret(causes, secret),
        Typed::Namespace(namespace) => validate_namespace(causes, namespace),
        Typed::Node(node) => validate_node(causes, node),
        Typed::Event(event) => validate_event(causes, event),
        Typed::Endpoints(endpoints) => validate_endpoints(causes, endpoints),
        Typed::ServiceAccount(_) => {}
        Typed::Lease(lease) => validate_lease(causes, lease),
    }
}

fn finish(resource: &Resource, typed: &Typed, causes: Causes) -> Result<(), StatusError> {
    if causes.is_empty() {
        Ok(())
    } else {
        let name = typed.metadata().name.clone().unwrap_or_default();
        Err(StatusError::invalid(
            resource.group,
            resource.kind,
            &name,
            causes,
        ))
    }
}

/// Validates an object of `resource` (after defaulting): decodes it into the typed struct
/// (a type error is a 400 naming the field), then reports every violation as one 422
/// Invalid with a cause each.
pub fn validate(resource: &Resource, obj: &Value) -> Result<(), StatusError> {
    check(resource, obj).validate(resource, obj)
}

// ---------------------------------------------------------------------------------------
// Updates.

fn immutable<T: PartialEq + serde::Serialize>(causes: &mut Causes, field: &str, old: &T, new: &T) {
    if old != new {
        causes.push(Cause::invalid(
            field,
            serde_json::to_value(new).unwrap_or(Value::Null),
            FIELD_IMMUTABLE,
        ));
    }
}

fn validate_meta_update(causes: &mut Causes, old: &ObjectMeta, new: &ObjectMeta) {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    immutable(causes, "metadata.name", &text(&old.name), &text(&new.name));
    immutable(
        causes,
        "metadata.namespace",
        &text(&old.namespace),
        &text(&new.namespace),
    );
    immutable(causes, "metadata.uid", &text(&old.uid), &text(&new.uid));
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or(Value::Null)
    };
    immutable(
        causes,
        "metadata.creationTimestamp",
        &time(&old.creation_timestamp),
        &time(&new.creation_timestamp),
    );
}

/// The paths (at most `DIFF_PATHS_MAX`) where two JSON values differ.
fn diff_paths(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    const DIFF_PATHS_MAX: usize = 10;
    if out.len() >= DIFF_PATHS_MAX || old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_paths(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    &child,
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_paths(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`";

fn validate_pod_update(causes: &mut Causes, old: &Pod, new: &Pod) {
    let old_spec =
        serde_json::to_value(old.spec.clone().unwrap_or_default()).unwrap_or(Value::Null);
    let new_spec =
        serde_json::to_value(new.spec.clone().unwrap_or_default()).unwrap_or(Value::Null);
    let old_typed = old.spec.clone().unwrap_or_default();
    let new_typed = new.spec.clone().unwrap_or_default();

    match (
        old_typed.active_deadline_seconds,
        new_typed.active_deadline_seconds,
    ) {
        (Some(old_deadline), Some(new_deadline)) if new_deadline > old_deadline => {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                new_deadline,
                "must be less than or equal to previous value",
            ))
        }
        (Some(_), None) => causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }

    // Tolerations may only be added; an existing one may change only its tolerationSeconds.
    let without_seconds = |t: &k8s_openapi::api::core::v1::Toleration| {
        let mut t = t.clone();
        t.toleration_seconds = None;
        t
    };
    let new_tolerations: Vec<_> = new_typed
        .tolerations
        .iter()
        .flatten()
        .map(without_seconds)
        .collect();
    let kept = old_typed
        .tolerations
        .iter()
        .flatten()
        .all(|t| new_tolerations.contains(&without_seconds(t)));
    if !kept {
        causes.push(Cause::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }

    // Everything else must be equal: copy the mutable fields from old into new and compare.
    let mut munged = new_spec;
    if let (Some(new_map), Some(old_map)) = (munged.as_object_mut(), old_spec.as_object()) {
        for list in ["containers", "initContainers"] {
            let old_list = old_map.get(list).and_then(Value::as_array);
            if let (Some(new_list), Some(old_list)) = (
                new_map.get_mut(list).and_then(Value::as_array_mut),
                old_list,
            ) {
                for (new_container, old_container) in new_list.iter_mut().zip(old_list) {
                    if let Some(container) = new_container.as_object_mut() {
                        match old_container.get("image") {
                            Some(image) => container.insert("image".to_owned(), image.clone()),
                            None => container.remove("image"),
                        };
                    }
                }
            }
        }
        for key in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
        ] {
            match old_map.get(key) {
                Some(value) => new_map.insert(key.to_owned(), value.clone()),
                None => new_map.remove(key),
            };
        }
    }
    if munged != old_spec {
        let mut changed = Vec::new();
        diff_paths(&old_spec, &munged, "spec", &mut changed);
        causes.push(Cause::forbidden(
            "spec",
            &format!("{POD_UPDATE_FORBIDDEN}\n  changed: {}", changed.join(", ")),
        ));
    }
}

fn validate_service_update(causes: &mut Causes, old: &Service, new: &Service) {
    let old_spec = old.spec.clone().unwrap_or_default();
    let new_spec = new.spec.clone().unwrap_or_default();
    let external = |t: &Option<String>| t.as_deref() == Some("ExternalName");
    if external(&old_spec.type_) || external(&new_spec.type_) {
        return;
    }
    let old_ip = old_spec.cluster_ip.unwrap_or_default();
    let new_ip = new_spec.cluster_ip.unwrap_or_default();
    if !old_ip.is_empty() && old_ip != new_ip {
        causes.push(Cause::invalid(
            "spec.clusterIP",
            new_ip.as_str(),
            FIELD_IMMUTABLE,
        ));
    }
}

/// Compares selectors by meaning (`{matchLabels: {}}` equals `{}`), falling back to
/// structure when one does not parse.
fn same_selector(old: &MetaLabelSelector, new: &MetaLabelSelector) -> bool {
    match (LabelSelector::from_meta(old), LabelSelector::from_meta(new)) {
        (Ok(a), Ok(b)) => a == b,
        _ => old == new,
    }
}

fn validate_selector_update(causes: &mut Causes, old: &MetaLabelSelector, new: &MetaLabelSelector) {
    if !same_selector(old, new) {
        causes.push(Cause::invalid(
            "spec.selector",
            serde_json::to_value(new).unwrap_or(Value::Null),
            FIELD_IMMUTABLE,
        ));
    }
}

const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";

fn validate_config_map_update(causes: &mut Causes, old: &ConfigMap, new: &ConfigMap) {
    if old.immutable != Some(true) {
        return;
    }
    if new.immutable != Some(true) {
        causes.push(Cause::forbidden("immutable", IMMUTABLE_WHEN_SET));
    }
    if old.data.clone().unwrap_or_default() != new.data.clone().unwrap_or_default() {
        causes.push(Cause::forbidden("data", IMMUTABLE_WHEN_SET));
    }
    if old.binary_data.clone().unwrap_or_default() != new.binary_data.clone().unwrap_or_default() {
        causes.push(Cause::forbidden("binaryData", IMMUTABLE_WHEN_SET));
    }
}

fn validate_secret_update(causes: &mut Causes, old: &Secret, new: &Secret) {
    let secret_type = |s: &Secret| s.type_.clone().unwrap_or_else(|| "Opaque".to_owned());
    immutable(causes, "type", &secret_type(old), &secret_type(new));
    if old.immutable != Some(true) {
        return;
    }
    if new.immutable != Some(true) {
        causes.push(Cause::forbidden("immutable", IMMUTABLE_WHEN_SET));
    }
    let changed_by_string_data = new.string_data.as_ref().is_some_and(|m| !m.is_empty());
    if old.data.clone().unwrap_or_default() != new.data.clone().unwrap_or_default()
        || changed_by_string_data
    {
        causes.push(Cause::forbidden("data", IMMUTABLE_WHEN_SET));
    }
}

fn validate_node_update(causes: &mut Causes, old: &Node, new: &Node) {
    let cidr = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .unwrap_or_default()
    };
    let old_cidr = cidr(old);
    if !old_cidr.is_empty() && old_cidr != cidr(new) {
        causes.push(Cause::forbidden(
            "spec.podCIDR",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
}

/// Validates an update: everything [`validate`] checks on `new`, plus the fields that may
/// not change — metadata name, namespace, uid and creationTimestamp; a Pod's spec except
/// container images, `activeDeadlineSeconds`, added tolerations and
/// `terminationGracePeriodSeconds`; a Service's assigned `clusterIP`; an apps/v1 selector;
/// the data of an `immutable` ConfigMap or Secret, and a Secret's type; a Node's podCIDR.
pub fn validate_update(resource: &Resource, old: &Value, new: &Value) -> Result<(), StatusError> {
    check(resource, new).validate_update(resource, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn resource(group: &str, plural: &str) -> &'static Resource {
        find(group, "v1", plural).unwrap()
    }

    /// Sets `value` at a `/`-separated path, creating objects on the way; numeric segments
    /// index arrays; `Value::Null` removes the field.
    fn set(obj: &mut Value, path: &str, value: Value) {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (last, parents) = segments.split_last().unwrap();
        let mut current = obj;
        for segment in parents {
            current = match segment.parse::<usize>() {
                Ok(i) if current.is_array() => &mut current[i],
                _ => current
                    .as_object_mut()
                    .unwrap()
                    .entry(*segment)
                    .or_insert_with(|| json!({})),
            };
        }
        match (last.parse::<usize>(), current) {
            (Ok(i), Value::Array(items)) if i == items.len() => items.push(value),
            (Ok(i), Value::Array(items)) => items[i] = value,
            (_, Value::Object(map)) if value.is_null() => {
                map.remove(*last);
            }
            (_, Value::Object(map)) => {
                map.insert((*last).to_owned(), value);
            }
            (_, other) => panic!("cannot set {path} in {other}"),
        }
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {
                "containers": [{
                    "name": "main", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "livenessProbe": {"httpGet": {"port": 80}}
                }],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        })
    }

    fn service() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}
                }
            }
        })
    }

    fn others() -> Vec<(&'static Resource, Value)> {
        vec![
            (resource("apps", "replicasets"), {
                let mut rs = deployment();
                set(&mut rs, "/kind", json!("ReplicaSet"));
                rs
            }),
            (
                resource("", "replicationcontrollers"),
                json!({"metadata": {"name": "rc", "namespace": "default"}, "spec": {"replicas": 1, "selector": {"app": "web"},
                       "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
            ),
            (
                resource("", "configmaps"),
                json!({"metadata": {"name": "cm", "namespace": "default"}, "data": {"a.conf": "x", "KEY_1": "y"}, "binaryData": {"b": "AAE="}}),
            ),
            (
                resource("", "secrets"),
                json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls",
                       "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}),
            ),
            (
                resource("", "namespaces"),
                json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": ["kubernetes"]}}),
            ),
            (
                resource("", "nodes"),
                json!({"metadata": {"name": "node-1.example"}, "spec": {"podCIDR": "10.244.1.0/24",
                       "taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}),
            ),
            (
                resource("", "events"),
                json!({"metadata": {"name": "web.1", "namespace": "default"}, "type": "Normal", "reason": "Scheduled",
                       "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}}),
            ),
            (
                resource("", "endpoints"),
                json!({"metadata": {"name": "web", "namespace": "default"},
                       "subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]}),
            ),
            (
                resource("", "serviceaccounts"),
                json!({"metadata": {"name": "default", "namespace": "default"}}),
            ),
            (
                resource("coordination.k8s.io", "leases"),
                json!({"metadata": {"name": "scheduler", "namespace": "kube-system"},
                       "spec": {"holderIdentity": "m1", "leaseDurationSeconds": 15}}),
            ),
        ]
    }

    fn causes_of(resource: &Resource, obj: &Value) -> Vec<String> {
        match validate(resource, obj) {
            Ok(()) => Vec::new(),
            Err(error) => {
                assert_eq!(
                    (error.code(), error.reason()),
                    (422, "Invalid"),
                    "{}",
                    error.message()
                );
                error.causes().iter().map(Cause::to_text).collect()
            }
        }
    }

    #[test]
    fn valid_objects_pass() {
        let mut all = vec![
            (resource("", "pods"), pod()),
            (resource("", "services"), service()),
            (resource("apps", "deployments"), deployment()),
        ];
        all.extend(others());
        for (resource, obj) in all {
            assert_eq!(
                causes_of(resource, &obj),
                Vec::<String>::new(),
                "{} without defaults",
                resource.kind
            );
            let mut defaulted = obj.clone();
            crate::defaults::apply(resource, &mut defaulted);
            assert_eq!(
                causes_of(resource, &defaulted),
                Vec::<String>::new(),
                "{} with defaults",
                resource.kind
            );
            assert!(
                unknown_fields(resource, &defaulted).is_empty(),
                "{}",
                resource.kind
            );
        }
    }

    /// Each case: a change to a valid object, and one cause it must produce.
    fn check(resource: &Resource, base: fn() -> Value, cases: &[(&str, Value, &str)]) {
        for (path, value, expected) in cases {
            let mut obj = base();
            set(&mut obj, path, value.clone());
            let causes = causes_of(resource, &obj);
            assert!(
                causes.iter().any(|c| c == expected),
                "{path} = {value}: want {expected:?}, got {causes:#?}"
            );
        }
    }

    #[test]
    fn pod_violations() {
        let long = "a".repeat(64);
        let huge = "x".repeat(ANNOTATIONS_TOTAL_MAX_BYTES);
        check(
            resource("", "pods"),
            pod,
            &[
                ("/metadata/name", Value::Null, "metadata.name: Required value: name or generateName is required"),
                (
                    "/metadata/name",
                    json!("Web"),
                    "metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ),
                ("/metadata/namespace", Value::Null, "metadata.namespace: Required value"),
                (
                    "/metadata/labels/-a",
                    json!("b"),
                    "metadata.labels: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                ),
                ("/metadata/labels/app", json!(long), "metadata.labels: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be no more than 63 characters"),
                ("/metadata/annotations/big", json!(huge), "metadata.annotations: Too long: may not be more than 262144 bytes"),
                ("/metadata/finalizers", json!(["custom"]), "metadata.finalizers[0]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"),
                ("/spec/containers", json!([]), "spec.containers: Required value"),
                (
                    "/spec/containers/0/name",
                    json!("Main"),
                    "spec.containers[0].name: Invalid value: \"Main\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ),
                ("/spec/containers/0/name", json!(""), "spec.containers[0].name: Required value"),
                ("/spec/initContainers", json!([{"name": "main", "image": "busybox"}]), "spec.initContainers[0].name: Duplicate value: \"main\""),
                ("/spec/containers/0/image", Value::Null, "spec.containers[0].image: Required value"),
                ("/spec/containers/0/ports/0/containerPort", json!(70000), "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
                ("/spec/containers/0/ports/0/containerPort", json!(0), "spec.containers[0].ports[0].containerPort: Required value"),
                ("/spec/containers/0/ports/0/protocol", json!("HTTP"), "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                ("/spec/restartPolicy", json!("Sometimes"), "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""),
                ("/spec/volumes/1", json!({"name": "data", "emptyDir": {}}), "spec.volumes[1].name: Duplicate value: \"data\""),
                ("/spec/volumes/0", json!({"name": "data", "emptyDir": {}, "hostPath": {"path": "/"}}), "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"),
                ("/spec/volumes/0", json!({"name": "data"}), "spec.volumes[0]: Required value: must specify a volume type"),
                ("/spec/containers/0/volumeMounts/0/name", json!("logs"), "spec.containers[0].volumeMounts[0].name: Not found: \"logs\""),
                ("/spec/containers/0/volumeMounts/0/mountPath", json!(""), "spec.containers[0].volumeMounts[0].mountPath: Required value"),
                ("/spec/containers/0/resources/requests/cpu", json!("2"), "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1"),
                ("/spec/containers/0/resources/requests/memory", json!("1Gi"), "spec.containers[0].resources.requests[memory]: Invalid value: \"1Gi\": must be less than or equal to memory limit of 128Mi"),
                ("/spec/containers/0/resources/limits/memory", json!("lots"), "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                ("/spec/containers/0/resources/limits/cpu", json!("-1"), "spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"),
                ("/spec/containers/0/livenessProbe", json!({}), "spec.containers[0].livenessProbe: Required value: must specify a handler type"),
                ("/spec/containers/0/livenessProbe/successThreshold", json!(2), "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"),
                ("/spec/containers/0/imagePullPolicy", json!("Sometimes"), "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""),
                ("/spec/activeDeadlineSeconds", json!(0), "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"),
                ("/spec/tolerations", json!([{"key": "k", "operator": "Exists", "value": "v"}]), "spec.tolerations[0].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'"),
            ],
        );
        // A generated name stands in for the name.
        let mut generated = pod();
        set(&mut generated, "/metadata/name", Value::Null);
        set(&mut generated, "/metadata/generateName", json!("web-"));
        assert!(causes_of(resource("", "pods"), &generated).is_empty());
        // Cluster-scoped kinds have no namespace.
        let mut namespaced_node = json!({"metadata": {"name": "n1", "namespace": "default"}});
        assert_eq!(
            causes_of(resource("", "nodes"), &namespaced_node),
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
        set(&mut namespaced_node, "/metadata/namespace", Value::Null);
        assert!(causes_of(resource("", "nodes"), &namespaced_node).is_empty());
    }

    #[test]
    fn invalid_collects_every_cause_in_one_message() {
        let mut bad = pod();
        set(&mut bad, "/spec/containers/0/image", Value::Null);
        set(&mut bad, "/spec/restartPolicy", json!("Sometimes"));
        let error = validate(resource("", "pods"), &bad).unwrap_err();
        assert_eq!(
            error.message(),
            "Pod \"web\" is invalid: [spec.containers[0].image: Required value, spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"]"
        );
        assert_eq!(error.causes()[0].field, "spec.containers[0].image");
        assert_eq!(error.causes()[0].reason, "FieldValueRequired");
        assert_eq!(error.to_value()["details"]["name"], "web");
        assert_eq!(error.to_value()["details"]["kind"], "Pod");
    }

    #[test]
    fn service_violations() {
        check(
            resource("", "services"),
            service,
            &[
                ("/spec/ports", json!([]), "spec.ports: Required value"),
                ("/spec/ports/0/port", json!(0), "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
                ("/spec/ports", json!([{"port": 80}, {"port": 443}]), "spec.ports[1].name: Required value"),
                ("/spec/ports", json!([{"name": "http", "port": 80}, {"name": "http", "port": 443}]), "spec.ports[1].name: Duplicate value: \"http\""),
                ("/spec/ports", json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]), "spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"),
                ("/spec/ports/0/protocol", json!("ICMP"), "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                ("/spec/ports/0/targetPort", json!(70000), "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
                ("/spec/type", json!("Foo"), "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
                ("/spec/ports/0/nodePort", json!(30080), "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
                ("/spec/clusterIP", json!("10.0.0.300"), "spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
                ("/spec/sessionAffinity", json!("Sticky"), "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""),
                (
                    "/metadata/name",
                    json!("1web"),
                    "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                ),
            ],
        );
        let services = resource("", "services");
        for (path, value) in [
            ("/spec/type", json!("NodePort")),
            ("/spec/clusterIP", json!("None")),
        ] {
            let mut ok = service();
            set(&mut ok, path, value);
            if path == "/spec/type" {
                set(&mut ok, "/spec/ports/0/nodePort", json!(30080));
            } else {
                set(&mut ok, "/spec/ports", json!([]));
            }
            assert!(causes_of(services, &ok).is_empty(), "{ok}");
        }
        let external = json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert!(causes_of(services, &external).is_empty());
        let mut external = external;
        set(&mut external, "/spec/externalName", Value::Null);
        assert_eq!(
            causes_of(services, &external),
            ["spec.externalName: Required value"]
        );
    }

    #[test]
    fn workload_violations() {
        check(
            resource("apps", "deployments"),
            deployment,
            &[
                ("/spec/replicas", json!(-1), "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
                ("/spec/selector", Value::Null, "spec.selector: Required value"),
                ("/spec/selector", json!({}), "spec.selector: Invalid value: {}: empty selector is invalid for deployment"),
                ("/spec/template/metadata/labels/app", json!("db"), "spec.template.metadata.labels: Invalid value: {\"app\":\"db\"}: `selector` does not match template `labels`"),
                ("/spec/selector/matchExpressions", json!([{"key": "tier", "operator": "In"}]), "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"),
                ("/spec/selector/matchExpressions", json!([{"key": "tier", "operator": "Near"}]), "spec.selector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"),
                ("/spec/template/spec/restartPolicy", json!("Never"), "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
                ("/spec/template/spec/containers/0/image", Value::Null, "spec.template.spec.containers[0].image: Required value"),
                ("/spec/template/spec/containers", json!([]), "spec.template.spec.containers: Required value"),
                ("/spec/strategy", json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}), "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"),
                ("/spec/strategy", json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x%"}}), "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x%\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
                ("/spec/strategy", json!({"type": "Canary"}), "spec.strategy.type: Unsupported value: \"Canary\": supported values: \"Recreate\", \"RollingUpdate\""),
                ("/spec/strategy", json!({"type": "Recreate", "rollingUpdate": {}}), "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"),
                ("/spec/progressDeadlineSeconds", json!(0), "spec.progressDeadlineSeconds: Invalid value: 0: must be greater than minReadySeconds"),
            ],
        );
        let rs_base = || others().remove(0).1;
        check(
            resource("apps", "replicasets"),
            rs_base,
            &[
                ("/spec/replicas", json!(-3), "spec.replicas: Invalid value: -3: must be greater than or equal to 0"),
                ("/spec/template/spec/activeDeadlineSeconds", json!(10), "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"),
            ],
        );
        let rc_base = || others().remove(1).1;
        check(
            resource("", "replicationcontrollers"),
            rc_base,
            &[
                ("/spec/selector", json!({}), "spec.selector: Required value"),
                ("/spec/selector", json!({"app": "db"}), "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"),
                ("/spec/template", Value::Null, "spec.template: Required value"),
            ],
        );
    }

    #[test]
    fn other_kind_violations() {
        let base = |i: usize| others().remove(i);
        let cases: Vec<(usize, &str, Value, &str)> = vec![
            (2, "/data/a b", json!("x"), "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
            (2, "/data/..", json!("x"), "data[..]: Invalid value: \"..\": must not be '..'"),
            (2, "/data/b", json!("x"), "binaryData[b]: Invalid value: \"b\": duplicate of key present in data"),
            (2, "/data/big", json!("x".repeat(CONFIG_DATA_MAX_BYTES)), "Too long: may not be more than 1048576 bytes"),
            (3, "/data/tls.key", Value::Null, "data[tls.key]: Required value"),
            (3, "/data/a:b", json!("eA=="), "data[a:b]: Invalid value: \"a:b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
            (4, "/metadata/name", json!("team.a"), "metadata.name: Invalid value: \"team.a\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            (5, "/spec/taints/0/effect", json!("NoRun"), "spec.taints[0].effect: Unsupported value: \"NoRun\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""),
            (5, "/spec/podCIDR", json!("10.244.1.0/33"), "spec.podCIDR: Invalid value: \"10.244.1.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"),
            (6, "/involvedObject/namespace", json!("other"), "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"),
            (6, "/type", json!("Info"), "type: Unsupported value: \"Info\": supported values: \"Normal\", \"Warning\""),
            (7, "/subsets/0/addresses/0/ip", json!("ten"), "subsets[0].addresses[0].ip: Invalid value: \"ten\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            (7, "/subsets/0/ports/0/port", json!(0), "subsets[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
            (8, "/metadata/name", json!("Default"), "metadata.name: Invalid value: \"Default\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            (9, "/spec/leaseDurationSeconds", json!(0), "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
        ];
        for (index, path, value, expected) in cases {
            let (resource, mut obj) = base(index);
            set(&mut obj, path, value.clone());
            let causes = causes_of(resource, &obj);
            assert!(
                causes.iter().any(|c| c == expected),
                "{} {path}: want {expected:?}, got {causes:#?}",
                resource.kind
            );
        }
    }

    #[test]
    fn decoding_errors_are_bad_requests_naming_the_field() {
        let pods = resource("", "pods");
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "/spec/containers/0/ports/0/containerPort",
                json!("80"),
                "Pod in version \"v1\" cannot be handled as a Pod: spec.containers[0].ports[0].containerPort: invalid type: string \"80\", expected i32",
            ),
            ("/spec", json!("x"), "Pod in version \"v1\" cannot be handled as a Pod: spec: invalid type: string \"x\", expected PodSpec"),
            ("/metadata/labels/app", json!(1), "Pod in version \"v1\" cannot be handled as a Pod: metadata.labels.app: invalid type: integer `1`, expected a string"),
            ("/apiVersion", json!("apps/v1"), "the API version in the data (apps/v1) does not match the expected API version (v1)"),
            ("/kind", json!("Service"), "Service in version \"v1\" cannot be handled as a Pod: the kind in the data (Service) does not match the expected kind (Pod)"),
        ];
        for (path, value, message) in cases {
            let mut obj = pod();
            set(&mut obj, path, value);
            let error = validate(pods, &obj).unwrap_err();
            assert_eq!((error.code(), error.reason()), (400, "BadRequest"));
            assert_eq!(error.message(), message);
        }
        let error = validate(pods, &json!([1])).unwrap_err();
        assert_eq!(error.code(), 400);
        let secret = json!({"metadata": {"name": "s", "namespace": "default"}, "data": {"k": "not base64!"}});
        let error = validate(resource("", "secrets"), &secret).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(error.message().contains("data.k"), "{}", error.message());
        // apiVersion and kind may be left out: the URL says what they are.
        let mut bare = pod();
        set(&mut bare, "/apiVersion", Value::Null);
        set(&mut bare, "/kind", Value::Null);
        assert!(validate(pods, &bare).is_ok());
    }

    #[test]
    fn unknown_fields_are_listed() {
        let pods = resource("", "pods");
        let mut obj = pod();
        set(&mut obj, "/spec/foo", json!(1));
        set(&mut obj, "/spec/containers/0/bar", json!({"x": 1}));
        set(&mut obj, "/extra", Value::Null);
        set(&mut obj, "/extra", json!(null));
        set(
            &mut obj,
            "/status",
            json!({"phase": "Running", "bogus": true}),
        );
        set(
            &mut obj,
            "/metadata/managedFields",
            json!([{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]),
        );
        assert_eq!(
            unknown_fields(pods, &obj),
            ["spec.containers[0].bar", "spec.foo", "status.bogus"]
        );
        assert!(unknown_fields(pods, &pod()).is_empty());
        let config_map = json!({"metadata": {"name": "c"}, "status": {}});
        assert_eq!(
            unknown_fields(resource("", "configmaps"), &config_map),
            ["status"]
        );
        let error = strict_decoding_error(pods, &unknown_fields(pods, &obj));
        assert_eq!(error.code(), 400);
        assert_eq!(
            error.message(),
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].bar\", unknown field \"spec.foo\", unknown field \"status.bogus\""
        );
    }

    #[test]
    fn a_status_write_is_checked_by_its_status_and_one_decode_serves_every_check() {
        let pods = resource("", "pods");
        let mut old = pod();
        set(&mut old, "/spec/activeDeadlineSeconds", json!(100));
        let mut running = old.clone();
        set(&mut running, "/status/phase", json!("Running"));
        set(&mut running, "/status/bogus", json!(1));
        let checked = super::check(pods, &running);
        assert_eq!(checked.unknown_fields(), ["status.bogus"]);
        assert!(checked.validate_status_update().is_ok());

        let mut wrong_type = old.clone();
        set(&mut wrong_type, "/status/containerStatuses", json!("none"));
        let error = super::check(pods, &wrong_type)
            .validate_status_update()
            .expect_err("a status that does not decode");
        assert_eq!(error.code(), 400, "{error:?}");

        // What the status subresource never changes is not validated again: a stored pod
        // that later rules would refuse still gets its status reported.
        let mut longer = running.clone();
        set(&mut longer, "/spec/activeDeadlineSeconds", json!(200));
        assert!(super::check(pods, &longer).validate_status_update().is_ok());
        let error = super::check(pods, &longer)
            .validate_update(pods, &old, &longer)
            .expect_err("a main-resource update is validated against the stored pod");
        assert_eq!(error.code(), 422);
        assert_eq!(
            validate_update(pods, &old, &longer).map_err(|e| e.code()),
            Err(422)
        );
        assert_eq!(unknown_fields(pods, &running), ["status.bogus"]);
    }

    #[test]
    fn updates_keep_immutable_fields() {
        let pods = resource("", "pods");
        let old = {
            let mut p = pod();
            set(&mut p, "/metadata/uid", json!("u1"));
            set(
                &mut p,
                "/metadata/creationTimestamp",
                json!("2026-01-01T00:00:00Z"),
            );
            set(
                &mut p,
                "/spec/tolerations",
                json!([{"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]),
            );
            set(&mut p, "/spec/activeDeadlineSeconds", json!(100));
            p
        };
        let allowed: Vec<(&str, Value)> = vec![
            ("/spec/containers/0/image", json!("nginx:1.28")),
            ("/spec/activeDeadlineSeconds", json!(50)),
            ("/spec/terminationGracePeriodSeconds", json!(5)),
            ("/spec/tolerations/0/tolerationSeconds", json!(20)),
            ("/metadata/labels/tier", json!("web")),
        ];
        for (path, value) in allowed {
            let mut new = old.clone();
            set(&mut new, path, value);
            assert_eq!(validate_update(pods, &old, &new), Ok(()), "{path}");
        }
        let mut added = old.clone();
        if let Some(tolerations) = added
            .pointer_mut("/spec/tolerations")
            .and_then(Value::as_array_mut)
        {
            tolerations.push(json!({"key": "b", "operator": "Exists"}));
        }
        assert_eq!(validate_update(pods, &old, &added), Ok(()));

        let forbidden: Vec<(&str, Value, &str)> = vec![
            ("/metadata/name", json!("other"), "metadata.name: Invalid value: \"other\": field is immutable"),
            ("/metadata/namespace", json!("kube-system"), "metadata.namespace: Invalid value: \"kube-system\": field is immutable"),
            ("/metadata/uid", json!("u2"), "metadata.uid: Invalid value: \"u2\": field is immutable"),
            ("/metadata/creationTimestamp", json!("2026-02-01T00:00:00Z"), "metadata.creationTimestamp: Invalid value: \"2026-02-01T00:00:00Z\": field is immutable"),
            ("/spec/activeDeadlineSeconds", json!(200), "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"),
            ("/spec/activeDeadlineSeconds", Value::Null, "spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"),
            ("/spec/tolerations", json!([]), "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"),
        ];
        for (path, value, expected) in forbidden {
            let mut new = old.clone();
            set(&mut new, path, value.clone());
            let error = validate_update(pods, &old, &new).unwrap_err();
            let causes: Vec<String> = error.causes().iter().map(Cause::to_text).collect();
            assert!(causes.iter().any(|c| c == expected), "{path}: {causes:#?}");
        }
        for (path, value, changed) in [
            ("/spec/restartPolicy", json!("Never"), "spec.restartPolicy"),
            (
                "/spec/containers/0/ports/0/containerPort",
                json!(81),
                "spec.containers[0].ports[0].containerPort",
            ),
            ("/spec/nodeName", json!("node-1"), "spec.nodeName"),
        ] {
            let mut new = old.clone();
            set(&mut new, path, value);
            let error = validate_update(pods, &old, &new).unwrap_err();
            let cause = &error.causes()[0];
            assert_eq!(
                (cause.field.as_str(), cause.reason.as_str()),
                ("spec", "FieldValueForbidden")
            );
            assert!(cause.message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`"), "{}", cause.message);
            assert!(
                cause.message.ends_with(&format!("changed: {changed}")),
                "{}",
                cause.message
            );
        }
    }

    #[test]
    fn updates_of_other_kinds() {
        let services = resource("", "services");
        let mut old = service();
        set(&mut old, "/spec/clusterIP", json!("10.96.0.10"));
        let mut changed = old.clone();
        set(&mut changed, "/spec/clusterIP", json!("10.96.0.11"));
        let error = validate_update(services, &old, &changed).unwrap_err();
        assert_eq!(
            error.causes()[0].to_text(),
            "spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"
        );
        let mut ports = old.clone();
        set(&mut ports, "/spec/ports/0/port", json!(81));
        assert_eq!(validate_update(services, &old, &ports), Ok(()));
        assert_eq!(
            validate_update(services, &service(), &old),
            Ok(()),
            "clusterIP may be set once"
        );

        let deployments = resource("apps", "deployments");
        let mut selector = deployment();
        set(
            &mut selector,
            "/spec/selector/matchLabels/tier",
            json!("web"),
        );
        set(
            &mut selector,
            "/spec/template/metadata/labels/tier",
            json!("web"),
        );
        let error = validate_update(deployments, &deployment(), &selector).unwrap_err();
        assert_eq!(
            error.causes()[0].to_text(),
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"tier\":\"web\"}}: field is immutable"
        );
        let mut scaled = deployment();
        set(&mut scaled, "/spec/replicas", json!(5));
        assert_eq!(validate_update(deployments, &deployment(), &scaled), Ok(()));

        let config_maps = resource("", "configmaps");
        let mut frozen = others().remove(2).1;
        set(&mut frozen, "/immutable", json!(true));
        let mut edited = frozen.clone();
        set(&mut edited, "/data/a.conf", json!("changed"));
        let error = validate_update(config_maps, &frozen, &edited).unwrap_err();
        assert_eq!(
            error.causes()[0].to_text(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
        let mut thawed = frozen.clone();
        set(&mut thawed, "/immutable", json!(false));
        let error = validate_update(config_maps, &frozen, &thawed).unwrap_err();
        assert_eq!(
            error.causes()[0].to_text(),
            "immutable: Forbidden: field is immutable when `immutable` is set"
        );
        let mut labelled = frozen.clone();
        set(&mut labelled, "/metadata/labels", json!({"a": "b"}));
        assert_eq!(validate_update(config_maps, &frozen, &labelled), Ok(()));

        let secrets = resource("", "secrets");
        let old_secret = others().remove(3).1;
        let mut retyped = old_secret.clone();
        set(&mut retyped, "/type", json!("Opaque"));
        let error = validate_update(secrets, &old_secret, &retyped).unwrap_err();
        assert_eq!(
            error.causes()[0].to_text(),
            "type: Invalid value: \"Opaque\": field is immutable"
        );
        let mut frozen_secret = old_secret.clone();
        set(&mut frozen_secret, "/immutable", json!(true));
        let mut edited_secret = frozen_secret.clone();
        set(&mut edited_secret, "/data/tls.key", json!("bmV3"));
        let error = validate_update(secrets, &frozen_secret, &edited_secret).unwrap_err();
        assert_eq!(
            error.causes()[0].to_text(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );

        let nodes = resource("", "nodes");
        let old_node = others().remove(5).1;
        let mut recidr = old_node.clone();
        set(&mut recidr, "/spec/podCIDR", json!("10.244.2.0/24"));
        let error = validate_update(nodes, &old_node, &recidr).unwrap_err();
        assert_eq!(error.causes()[0].to_text(), "spec.podCIDR: Forbidden: node updates may not change podCIDR except from \"\" to valid");
    }

    #[test]
    fn name_checks() {
        let (a63, a64, a254) = ("a".repeat(63), "a".repeat(64), "a".repeat(254));
        type Check = fn(&str) -> Vec<String>;
        let cases: Vec<(Check, &str, Option<&str>)> = vec![
            (is_dns1123_label, "my-name", None),
            (is_dns1123_label, "123-abc", None),
            (is_dns1123_label, "-a", Some("a lowercase RFC 1123 label")),
            (is_dns1123_label, "a.b", Some("a lowercase RFC 1123 label")),
            (is_dns1123_label, "", Some("a lowercase RFC 1123 label")),
            (is_dns1123_label, &a63, None),
            (
                is_dns1123_label,
                &a64,
                Some("must be no more than 63 characters"),
            ),
            (is_dns1123_subdomain, "example.com", None),
            (
                is_dns1123_subdomain,
                "a..b",
                Some("a lowercase RFC 1123 subdomain"),
            ),
            (
                is_dns1123_subdomain,
                &a254,
                Some("must be no more than 253 characters"),
            ),
            (is_dns1035_label, "web-1", None),
            (is_dns1035_label, "1web", Some("a DNS-1035 label")),
            (is_qualified_name, "app", None),
            (is_qualified_name, "example.com/App_1.x", None),
            (
                is_qualified_name,
                "/app",
                Some("prefix part must be non-empty"),
            ),
            (
                is_qualified_name,
                "Example.com/app",
                Some("prefix part a lowercase RFC 1123 subdomain"),
            ),
            (
                is_qualified_name,
                "a/b/c",
                Some("a qualified name must consist of"),
            ),
            (
                is_qualified_name,
                "example.com/",
                Some("name part must be non-empty"),
            ),
            (
                is_qualified_name,
                &a64,
                Some("name part must be no more than 63 characters"),
            ),
            (is_valid_label_value, "", None),
            (is_valid_label_value, "v1.2_x-y", None),
            (
                is_valid_label_value,
                "a b",
                Some("a valid label must be an empty string"),
            ),
            (is_config_map_key, "KEY_1.a-b", None),
            (is_config_map_key, ".", Some("must not be '.'")),
            (is_config_map_key, "..a", Some("must not start with '..'")),
            (is_config_map_key, "a/b", Some("a valid config key")),
            (is_valid_port_name, "http", None),
            (is_valid_port_name, "http-alt2", None),
            (
                is_valid_port_name,
                "8080",
                Some("must contain at least one letter (a-z)"),
            ),
            (
                is_valid_port_name,
                "http--x",
                Some("must not contain consecutive hyphens"),
            ),
            (
                is_valid_port_name,
                "-http",
                Some("must not begin or end with a hyphen"),
            ),
            (
                is_valid_port_name,
                "a-very-long-port-name",
                Some("must be no more than 15 characters"),
            ),
            (
                is_valid_port_name,
                "HTTP",
                Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
            ),
        ];
        for (check, value, expected) in cases {
            let errors = check(value);
            match expected {
                None => assert!(errors.is_empty(), "{value}: {errors:?}"),
                Some(message) => assert!(
                    errors.iter().any(|e| e.starts_with(message)),
                    "{value}: {errors:?}"
                ),
            }
        }
        assert!(is_valid_port_num(1).is_empty() && is_valid_port_num(65535).is_empty());
        assert_eq!(
            is_valid_port_num(0),
            ["must be between 1 and 65535, inclusive"]
        );
        assert!(is_valid_cidr("10.0.0.0/8") && is_valid_cidr("fd00::/64"));
        assert!(
            !is_valid_cidr("10.0.0.0") && !is_valid_cidr("10.0.0.0/33") && !is_valid_cidr("x/8")
        );
    }

    #[test]
    fn quantities_parse() {
        let cases: Vec<(&str, Result<i128, QuantityError>)> = vec![
            ("100m", Ok(100)),
            ("1", Ok(1000)),
            ("1.5", Ok(1500)),
            ("0.5", Ok(500)),
            (".5", Ok(500)),
            ("5.", Ok(5000)),
            ("128Mi", Ok(128 * 1024 * 1024 * 1000)),
            ("1Ki", Ok(1024 * 1000)),
            ("1G", Ok(1_000_000_000_000)),
            ("1k", Ok(1_000_000)),
            ("1e3", Ok(1_000_000)),
            ("1E-3", Ok(1)),
            ("2e+1", Ok(20_000)),
            ("0.1m", Ok(1)),
            ("1n", Ok(1)),
            ("1500u", Ok(2)),
            ("-1", Ok(-1000)),
            ("+2", Ok(2000)),
            ("0", Ok(0)),
            ("1Ei", Ok(1_152_921_504_606_846_976_000)),
            ("1e100", Ok(i128::MAX)),
            ("", Err(QuantityError::Format)),
            ("abc", Err(QuantityError::Format)),
            ("Mi", Err(QuantityError::Format)),
            ("1x", Err(QuantityError::Format)),
            ("1.2.3", Err(QuantityError::Numeric)),
            (".", Err(QuantityError::Numeric)),
            ("1Zi", Err(QuantityError::Format)),
            ("1mi", Err(QuantityError::Suffix)),
            ("1e", Err(QuantityError::Suffix)),
            ("1ee3", Err(QuantityError::Suffix)),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Quantity::parse(text).map(|q| q.milli_value()),
                expected,
                "{text}"
            );
        }
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert!(q("500m") < q("1"));
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("100m").value(), 1);
        assert!(q("-1").is_negative() && q("0").is_zero());
    }
}
