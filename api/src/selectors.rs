//! Label and field selectors: parsing Kubernetes' string syntax and `LabelSelector`
//! objects, matching objects against them, and printing them back.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaLabelSelector;
use serde_json::Value;

use crate::resources::Resource;
use crate::status::StatusError;
use crate::validation::{is_qualified_name, is_valid_label_value};

/// Errors from parsing a selector.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// The label selector string does not follow the grammar.
    #[error("unable to parse label selector {selector:?}: {message}")]
    Syntax {
        /// The whole selector.
        selector: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A label key is not a qualified name.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A label value is not valid.
    #[error("invalid label value {value:?}: {reason}")]
    InvalidValue {
        /// The value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The values do not suit the operator.
    #[error("invalid requirement on {key:?}: {reason}")]
    Requirement {
        /// The key of the requirement.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `matchExpressions` operator is not one of In, NotIn, Exists, DoesNotExist.
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    /// A `LabelSelector` object is malformed.
    #[error("invalid label selector object: {0}")]
    Malformed(String),
    /// A field selector term has no operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax {
        /// The whole selector.
        selector: String,
        /// The term without an operator.
        term: String,
    },
    /// A field selector value has a bad escape.
    #[error("invalid field selector: {0}")]
    FieldEscape(String),
    /// The field cannot be selected on for this kind.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

impl From<SelectorError> for StatusError {
    fn from(error: SelectorError) -> Self {
        StatusError::bad_request(error.to_string())
    }
}

/// A label requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>1` (integer values)
    GreaterThan,
    /// `key<1` (integer values)
    LessThan,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates.
    values: Vec<String>,
}

impl Requirement {
    /// A validated requirement (key a qualified name, values valid label values and suited
    /// to the operator).
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let errors = is_qualified_name(key);
        if !errors.is_empty() {
            return Err(SelectorError::InvalidKey {
                key: key.to_owned(),
                reason: errors.join("; "),
            });
        }
        let mut values = values;
        values.sort();
        values.dedup();
        let fail = |reason: &str| {
            Err(SelectorError::Requirement {
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return fail("for 'in', 'notin' operators, values set can't be empty");
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return fail("exact-match compatibility requires one single value");
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return fail("values set must be empty for exists and does not exist");
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return fail("for 'Gt', 'Lt' operators, exactly one value is required");
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return fail("for 'Gt', 'Lt' operators, the value must be an integer");
                }
            }
            _ => {}
        }
        for value in &values {
            let errors = is_valid_label_value(value);
            if !errors.is_empty() {
                return Err(SelectorError::InvalidValue {
                    value: value.clone(),
                    reason: errors.join("; "),
                });
            }
        }
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }

    /// Whether a label's value (`None`: the label is absent) satisfies this requirement.
    fn matches_value(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let values = self.values.join(",");
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            write!(f, "({values})")
        } else {
            f.write_str(&values)
        }
    }
}

/// A label selector: requirements that must all hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stable), as Kubernetes keeps them.
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Identifier(String),
    In,
    NotIn,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenPar,
    ClosedPar,
    Comma,
    End,
}

impl Token {
    fn literal(&self) -> &str {
        match self {
            Token::Identifier(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenPar => "(",
            Token::ClosedPar => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }

    /// In a value position, `in` and `notin` are plain identifiers.
    fn as_value(&self) -> Option<&str> {
        match self {
            Token::Identifier(s) => Some(s),
            Token::In => Some("in"),
            Token::NotIn => Some("notin"),
            _ => None,
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn special_token(s: &str) -> Option<Token> {
    Some(match s {
        "!" => Token::Bang,
        "=" => Token::Equals,
        "==" => Token::DoubleEquals,
        "!=" => Token::NotEquals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "(" => Token::OpenPar,
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        _ => return None,
    })
}

/// Splits a label selector into tokens as Kubernetes' lexer does: the longest run of
/// special symbols that forms a token, or a run of other non-space characters.
fn lex(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if is_special(c) {
            let mut buffer = String::new();
            let mut last: Option<(Token, usize)> = None;
            let mut j = i;
            while j < chars.len() && is_special(chars[j]) {
                buffer.push(chars[j]);
                if let Some(token) = special_token(&buffer) {
                    last = Some((token, j + 1));
                } else if last.is_some() {
                    break;
                }
                j += 1;
            }
            let Some((token, end)) = last else {
                return Err(format!("error expected: keyword found '{buffer}'"));
            };
            tokens.push(token);
            i = end;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
        }
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

/// What went wrong while parsing: a syntax message, or a rejected requirement.
enum ParseFailure {
    Syntax(String),
    Selector(SelectorError),
}

impl From<SelectorError> for ParseFailure {
    fn from(error: SelectorError) -> Self {
        ParseFailure::Selector(error)
    }
}

fn syntax<T>(message: String) -> Result<T, ParseFailure> {
    Err(ParseFailure::Syntax(message))
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, ParseFailure> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                Token::End => return Ok(requirements),
                token if token.as_value().is_some() || *token == Token::Bang => {
                    requirements.push(self.requirement()?);
                    match self.next() {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let next = self.peek();
                            if next.as_value().is_none() && *next != Token::Bang {
                                return syntax(format!(
                                    "found '{}', expected: identifier after ','",
                                    next.literal()
                                ));
                            }
                        }
                        other => {
                            return syntax(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            ))
                        }
                    }
                }
                other => {
                    return syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, ParseFailure> {
        let mut token = self.next();
        let negated = token == Token::Bang;
        if negated {
            token = self.next();
        }
        let Some(key) = token.as_value().map(str::to_owned) else {
            return syntax(format!("found '{}', expected: identifier", token.literal()));
        };
        if negated || matches!(self.peek(), Token::End | Token::Comma) {
            // `!key` ends the requirement; what follows is checked by the caller.
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            // Key validity is reported before anything else, as Kubernetes does.
            return Ok(Requirement::new(&key, operator, Vec::new())?);
        }
        let errors = is_qualified_name(&key);
        if !errors.is_empty() {
            return Err(SelectorError::InvalidKey {
                key,
                reason: errors.join("; "),
            }
            .into());
        }
        let operator = match self.next() {
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            other => {
                return syntax(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                ))
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_list()?,
            _ => self.exact_value()?,
        };
        Ok(Requirement::new(&key, operator, values)?)
    }

    fn exact_value(&mut self) -> Result<Vec<String>, ParseFailure> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        let token = self.next();
        match token.as_value() {
            Some(value) => Ok(vec![value.to_owned()]),
            None => syntax(format!("found '{}', expected: identifier", token.literal())),
        }
    }

    fn value_list(&mut self) -> Result<Vec<String>, ParseFailure> {
        let token = self.next();
        if token != Token::OpenPar {
            return syntax(format!("found '{}', expected: '('", token.literal()));
        }
        if *self.peek() == Token::ClosedPar {
            self.next();
            return Ok(vec![String::new()]);
        }
        let mut values: Vec<String> = Vec::new();
        loop {
            let token = self.next();
            if let Some(value) = token.as_value() {
                values.push(value.to_owned());
                match self.next() {
                    Token::Comma => {}
                    Token::ClosedPar => return Ok(values),
                    other => {
                        return syntax(format!("found '{}', expected: ',' or ')'", other.literal()))
                    }
                }
                // `(a,)`: an empty value before the closing parenthesis.
                if *self.peek() == Token::ClosedPar {
                    self.next();
                    values.push(String::new());
                    return Ok(values);
                }
            } else if token == Token::Comma {
                // `(,a)` or `(a,,b)`: empty values.
                values.push(String::new());
                if *self.peek() == Token::ClosedPar {
                    self.next();
                    return Ok(values);
                }
            } else {
                return syntax(format!(
                    "found '{}', expected: ',', or identifier",
                    token.literal()
                ));
            }
        }
    }
}

impl LabelSelector {
    /// The selector that selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses Kubernetes' label selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-separated. Empty selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let syntax_error = |message: String| SelectorError::Syntax {
            selector: selector.to_owned(),
            message,
        };
        let tokens = lex(selector).map_err(syntax_error)?;
        let mut parser = Parser {
            tokens,
            position: 0,
        };
        match parser.parse() {
            Ok(requirements) => Ok(Self::from_requirements(requirements)),
            Err(ParseFailure::Syntax(message)) => Err(syntax_error(message)),
            Err(ParseFailure::Selector(error)) => Err(error),
        }
    }

    /// A selector of these requirements (sorted by key).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    /// The selector of `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist).
    pub fn from_meta(selector: &MetaLabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key,
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expression in selector.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::InvalidOperator(other.to_owned())),
            };
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expression.key, operator, values)?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// [`LabelSelector::from_meta`] on a `LabelSelector` held as JSON.
    pub fn from_value(selector: &Value) -> Result<Self, SelectorError> {
        let meta: MetaLabelSelector = serde_json::from_value(selector.clone())
            .map_err(|e| SelectorError::Malformed(e.to_string()))?;
        Self::from_meta(&meta)
    }

    /// The selector `k1=v1,k2=v2` of a label map (an RC's `spec.selector`).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, vec![v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement, read in place (a
    /// controller matches every orphan pod at every sync; copying the labels out cost more
    /// than the match). A label whose value is not a string counts as absent, as in
    /// [`crate::object::labels`].
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            r.matches_value(value)
        })
    }

    /// Whether the selector has no requirements (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// How a selectable field is read when it is absent: Go's zero value of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldType {
    /// Absent reads as "".
    Text,
    /// Absent reads as "false".
    Bool,
    /// Absent reads as "0".
    Int,
}

/// A field that can be selected on, and where it lives in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SelectableField {
    label: &'static str,
    path: &'static [&'static str],
    kind: FieldType,
}

const fn text(label: &'static str, path: &'static [&'static str]) -> SelectableField {
    SelectableField {
        label,
        path,
        kind: FieldType::Text,
    }
}

const COMMON_FIELDS: &[SelectableField] = &[
    text("metadata.name", &["metadata", "name"]),
    text("metadata.namespace", &["metadata", "namespace"]),
];

const POD_FIELDS: &[SelectableField] = &[
    text("spec.nodeName", &["spec", "nodeName"]),
    text("spec.restartPolicy", &["spec", "restartPolicy"]),
    text("spec.schedulerName", &["spec", "schedulerName"]),
    text("spec.serviceAccountName", &["spec", "serviceAccountName"]),
    SelectableField {
        label: "spec.hostNetwork",
        path: &["spec", "hostNetwork"],
        kind: FieldType::Bool,
    },
    text("status.phase", &["status", "phase"]),
    text("status.podIP", &["status", "podIP"]),
    text("status.nominatedNodeName", &["status", "nominatedNodeName"]),
];

const EVENT_FIELDS: &[SelectableField] = &[
    text("involvedObject.kind", &["involvedObject", "kind"]),
    text("involvedObject.namespace", &["involvedObject", "namespace"]),
    text("involvedObject.name", &["involvedObject", "name"]),
    text("involvedObject.uid", &["involvedObject", "uid"]),
    text(
        "involvedObject.apiVersion",
        &["involvedObject", "apiVersion"],
    ),
    text(
        "involvedObject.resourceVersion",
        &["involvedObject", "resourceVersion"],
    ),
    text("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
    text("reason", &["reason"]),
    text("reportingComponent", &["reportingComponent"]),
    text("source", &["source", "component"]),
    text("type", &["type"]),
];

const SECRET_FIELDS: &[SelectableField] = &[text("type", &["type"])];
const NODE_FIELDS: &[SelectableField] = &[SelectableField {
    label: "spec.unschedulable",
    path: &["spec", "unschedulable"],
    kind: FieldType::Bool,
}];
const NAMESPACE_FIELDS: &[SelectableField] = &[text("status.phase", &["status", "phase"])];
const REPLICAS_FIELDS: &[SelectableField] = &[SelectableField {
    label: "status.replicas",
    path: &["status", "replicas"],
    kind: FieldType::Int,
}];

/// The kind-specific selectable fields, as Kubernetes registers them.
fn kind_fields(resource: &Resource) -> &'static [SelectableField] {
    match (resource.group, resource.kind) {
        ("", "Pod") => POD_FIELDS,
        ("", "Event") => EVENT_FIELDS,
        ("", "Secret") => SECRET_FIELDS,
        ("", "Node") => NODE_FIELDS,
        ("", "Namespace") => NAMESPACE_FIELDS,
        ("", "ReplicationController") | ("apps", "ReplicaSet") => REPLICAS_FIELDS,
        _ => &[],
    }
}

/// The names of the fields a resource can be selected on.
pub fn selectable_fields(resource: &Resource) -> Vec<&'static str> {
    COMMON_FIELDS
        .iter()
        .chain(kind_fields(resource))
        .map(|f| f.label)
        .collect()
}

fn lookup_field(resource: &Resource, label: &str) -> Option<SelectableField> {
    COMMON_FIELDS
        .iter()
        .chain(kind_fields(resource))
        .find(|f| f.label == label)
        .copied()
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: SelectableField,
    equal: bool,
    value: String,
}

/// A field selector: `field=value`, `field==value`, `field!=value` terms that must all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on commas not preceded by an escaping backslash.
fn split_terms(selector: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in selector.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

/// Splits a term at its first unescaped operator (`!=`, `==`, `=`).
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let bytes = term.as_bytes();
    let mut escaped = false;
    for (i, b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]))
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], true, &term[i + 2..]))
            }
            b'=' => return Some((&term[..i], true, &term[i + 1..])),
            _ => {}
        }
    }
    None
}

fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(SelectorError::FieldEscape(format!(
                        "invalid escape sequence: \\{e}"
                    )))
                }
                None => {
                    return Err(SelectorError::FieldEscape(
                        "invalid escape sequence: \\".to_owned(),
                    ))
                }
            },
            ',' | '=' => {
                return Err(SelectorError::FieldEscape(format!(
                    "unescaped character {c:?} in value"
                )))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

impl FieldSelector {
    /// The selector that selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses a field selector for `resource`; a field the kind does not support is an
    /// error (`field label not supported: foo`).
    pub fn parse(resource: &Resource, selector: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts.iter().filter(|p| !p.trim().is_empty()) {
            let Some((lhs, equal, rhs)) = split_term(part) else {
                return Err(SelectorError::FieldSyntax {
                    selector: selector.to_owned(),
                    term: part.clone(),
                });
            };
            let value = unescape(rhs)?;
            let label = lhs.trim();
            let field = lookup_field(resource, label)
                .ok_or_else(|| SelectorError::UnsupportedField(label.to_owned()))?;
            terms.push(FieldTerm {
                field,
                equal,
                value,
            });
        }
        Ok(Self { terms })
    }

    /// Whether the object satisfies every term. An absent field reads as Go's zero value
    /// of its type, as in Kubernetes: "" for strings, "false" for booleans, "0" for numbers.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms
            .iter()
            .all(|term| (field_value(obj, &term.field) == term.value) == term.equal)
    }

    /// The value required by a `field=value` term (e.g. the name for `metadata.name=x`), so
    /// a server can narrow a read or a watch.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field.label == field)
            .map(|t| t.value.as_str())
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Texts found verbatim in the compact JSON of every object this selector matches: the
    /// values of `field=value` terms on text fields, when made only of characters JSON never
    /// escapes. A server watching thousands of `spec.nodeName=...` selections passes over a
    /// stored object that lacks one without parsing it.
    pub fn required_texts(&self) -> Vec<&str> {
        self.terms
            .iter()
            .filter(|t| {
                t.equal
                    && t.field.kind == FieldType::Text
                    && !t.value.is_empty()
                    && t.value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._:/@+".contains(&b))
            })
            .map(|t| t.value.as_str())
            .collect()
    }
}

fn field_value(obj: &Value, field: &SelectableField) -> String {
    let mut current = Some(obj);
    for key in field.path {
        current = current.and_then(|v| v.get(key));
    }
    match current {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => match field.kind {
            FieldType::Text => String::new(),
            FieldType::Bool => "false".to_owned(),
            FieldType::Int => "0".to_owned(),
        },
        Some(other) => other.to_string(),
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if term.equal { "=" } else { "!=" };
            write!(f, "{}{op}{}", term.field.label, escape(&term.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selector_parses_and_prints() {
        let cases = [
            ("", ""),
            ("   ", ""),
            ("a=b", "a=b"),
            ("a==b", "a==b"),
            ("a!=b", "a!=b"),
            ("a=", "a="),
            ("a", "a"),
            ("!a", "!a"),
            ("a in (y,x)", "a in (x,y)"),
            ("a notin (x)", "a notin (x)"),
            ("a in (x,x)", "a in (x)"),
            ("a in ()", "a in ()"),
            ("a in (x,)", "a in (,x)"),
            ("a>1", "a>1"),
            ("a<10", "a<10"),
            ("z=1, a=2 ,m", "a=2,m,z=1"),
            (
                "example.com/app=web,tier in (front)",
                "example.com/app=web,tier in (front)",
            ),
            ("env in (in,notin)", "env in (in,notin)"),
        ];
        for (input, printed) in cases {
            let selector = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(selector.to_string(), printed, "{input}");
            assert_eq!(
                LabelSelector::parse(printed).unwrap(),
                selector,
                "{input} round trip"
            );
        }
    }

    #[test]
    fn label_selector_errors() {
        let cases = [
            ("a=b=c", "found '=', expected: ',' or 'end of string'"),
            ("a in b", "found 'b', expected: '('"),
            ("a in (b", "found '', expected: ',' or ')'"),
            ("a b", "found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("a=b,", "found '', expected: identifier after ','"),
            (
                ",a",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            ("!", "found '', expected: identifier"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("a=(", "found '(', expected: identifier"),
            (
                "a>b",
                "for 'Gt', 'Lt' operators, the value must be an integer",
            ),
            ("-a=b", "name part must consist of alphanumeric characters"),
            (
                "a=-b",
                "a valid label must be an empty string or consist of alphanumeric",
            ),
            ("a/b/c=d", "a qualified name must consist of"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=!", "found '!', expected: identifier"),
            ("a=b)", "found ')', expected: ',' or 'end of string'"),
        ];
        for (input, message) in cases {
            let error = LabelSelector::parse(input).expect_err(input).to_string();
            assert!(error.contains(message), "{input}: {error}");
        }
        let status: StatusError = LabelSelector::parse("a b").unwrap_err().into();
        assert_eq!(status.code(), 400);
    }

    #[test]
    fn label_selector_matches() {
        let app_web = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let empty = labels(&[]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app!=db", true, true),
            ("app in (db,web)", true, false),
            ("app notin (db,web)", false, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=web,tier=back", false, false),
            ("app=web,tier=front", true, false),
            ("n>4", true, false),
            ("n>5", false, false),
            ("n<6", true, false),
            ("app=", false, false),
        ];
        // The same labels on objects, matched in place; a non-string value counts as absent.
        let app_web_object = json!({"metadata": {"labels":
            {"app": "web", "tier": "front", "n": "5", "odd": 7}}});
        let unlabelled = json!({"metadata": {"name": "x"}});
        for (input, on_app_web, on_empty) in cases {
            let selector = LabelSelector::parse(input).unwrap();
            assert_eq!(selector.matches(&app_web), on_app_web, "{input} on app=web");
            assert_eq!(selector.matches(&empty), on_empty, "{input} on no labels");
            assert_eq!(
                selector.matches_object(&app_web_object),
                on_app_web,
                "{input}"
            );
            assert_eq!(selector.matches_object(&unlabelled), on_empty, "{input}");
        }
        assert!(LabelSelector::parse("!odd")
            .unwrap()
            .matches_object(&app_web_object));
        assert!(LabelSelector::parse("a=")
            .unwrap()
            .matches(&labels(&[("a", "")])));
        assert!(LabelSelector::everything().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
    }

    #[test]
    fn label_selector_from_meta() {
        let cases = [
            (json!({}), Ok("")),
            (json!({"matchLabels": {"app": "web"}}), Ok("app=web")),
            (
                json!({"matchLabels": {"b": "1"}, "matchExpressions": [
                    {"key": "a", "operator": "In", "values": ["y", "x"]},
                    {"key": "c", "operator": "NotIn", "values": ["z"]},
                    {"key": "d", "operator": "Exists"},
                    {"key": "e", "operator": "DoesNotExist"}
                ]}),
                Ok("a in (x,y),b=1,c notin (z),d,!e"),
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]}),
                Err("\"Foo\" is not a valid label selector operator"),
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
                Err("values set can't be empty"),
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                Err("values set must be empty"),
            ),
            (
                json!({"matchLabels": {"a": "b c"}}),
                Err("invalid label value"),
            ),
            (
                json!({"matchLabels": "x"}),
                Err("invalid label selector object"),
            ),
        ];
        for (input, expected) in cases {
            match (LabelSelector::from_value(&input), expected) {
                (Ok(selector), Ok(printed)) => assert_eq!(selector.to_string(), printed),
                (Err(error), Err(message)) => {
                    assert!(error.to_string().contains(message), "{error}")
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let from_map = LabelSelector::from_map(&labels(&[("app", "web")])).unwrap();
        assert_eq!(from_map.to_string(), "app=web");
    }

    #[test]
    fn field_selector_parses_per_kind() {
        let pods = find("", "v1", "pods").unwrap();
        let events = find("", "v1", "events").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        let deployments = find("apps", "v1", "deployments").unwrap();
        let replicasets = find("apps", "v1", "replicasets").unwrap();
        let cases: Vec<(&Resource, &str, Result<&str, &str>)> = vec![
            (pods, "", Ok("")),
            (pods, "metadata.name=x", Ok("metadata.name=x")),
            (pods, "metadata.name==x", Ok("metadata.name=x")),
            (pods, "spec.nodeName!=,status.phase=Running", Ok("spec.nodeName!=,status.phase=Running")),
            (pods, "metadata.name=a\\,b", Ok("metadata.name=a\\,b")),
            (pods, "spec.foo=x", Err("field label not supported: spec.foo")),
            (pods, "metadata.name", Err("invalid selector: 'metadata.name'; can't understand 'metadata.name'")),
            (pods, "metadata.name=a\\x", Err("invalid field selector: invalid escape sequence: \\x")),
            (events, "involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u", Ok("involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u")),
            (events, "source=kubelet,type=Warning,reason=X,reportingComponent=k", Ok("reason=X,reportingComponent=k,source=kubelet,type=Warning")),
            (nodes, "spec.unschedulable=false", Ok("spec.unschedulable=false")),
            (nodes, "spec.nodeName=x", Err("field label not supported: spec.nodeName")),
            (deployments, "metadata.namespace=default", Ok("metadata.namespace=default")),
            (deployments, "status.replicas=1", Err("field label not supported: status.replicas")),
            (replicasets, "status.replicas=1", Ok("status.replicas=1")),
        ];
        for (resource, input, expected) in cases {
            match (FieldSelector::parse(resource, input), expected) {
                (Ok(selector), Ok(printed)) => assert_eq!(selector.to_string(), printed, "{input}"),
                (Err(error), Err(message)) => assert_eq!(error.to_string(), message, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let status: StatusError = FieldSelector::parse(pods, "spec.foo=x").unwrap_err().into();
        assert_eq!((status.code(), status.reason()), (400, "BadRequest"));
    }

    #[test]
    fn field_selector_matches_with_go_zero_values() {
        let pods = find("", "v1", "pods").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        let replicasets = find("apps", "v1", "replicasets").unwrap();
        let events = find("", "v1", "events").unwrap();
        let pod = json!({"metadata": {"name": "web-1", "namespace": "default"},
                         "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
        let pending = json!({"metadata": {"name": "web-2", "namespace": "default"}, "spec": {}});
        let node = json!({"spec": {}});
        let cordoned = json!({"spec": {"unschedulable": true}});
        let empty = json!({});
        let three = json!({"status": {"replicas": 3}});
        let event = json!({"source": {"component": "kubelet"}});
        let cases: Vec<(&Resource, &str, &Value, bool)> = vec![
            (pods, "metadata.name=web-1", &pod, true),
            (pods, "metadata.name=web-1", &pending, false),
            (pods, "metadata.name!=web-1", &pending, true),
            (pods, "spec.nodeName=", &pending, true),
            (pods, "spec.nodeName=", &pod, false),
            (
                pods,
                "spec.nodeName=node-1,status.phase=Running",
                &pod,
                true,
            ),
            (
                pods,
                "spec.nodeName=node-1,status.phase!=Running",
                &pod,
                false,
            ),
            (pods, "spec.hostNetwork=false", &pod, true),
            (nodes, "spec.unschedulable=false", &node, true),
            (nodes, "spec.unschedulable=true", &cordoned, true),
            (nodes, "spec.unschedulable=true", &node, false),
            (replicasets, "status.replicas=0", &empty, true),
            (replicasets, "status.replicas=3", &three, true),
            (events, "source=kubelet", &event, true),
        ];
        for (resource, input, obj, expected) in cases {
            let selector = FieldSelector::parse(resource, input).unwrap();
            assert_eq!(selector.matches(obj), expected, "{input} on {obj}");
            // What a watch skips unparsed must never have matched.
            let json = serde_json::to_string(obj).unwrap();
            if expected {
                for text in selector.required_texts() {
                    assert!(json.contains(text), "{input}: {text:?} not in {json}");
                }
            }
        }
    }

    #[test]
    fn required_texts_are_the_unescaped_values_of_equal_text_terms() {
        let pods = find("", "v1", "pods").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        let cases: &[(&Resource, &str, &[&str])] = &[
            (pods, "spec.nodeName=node-1", &["node-1"]),
            (
                pods,
                "spec.nodeName==node-1,status.phase=Running",
                &["node-1", "Running"],
            ),
            (pods, "spec.nodeName!=node-1", &[]),
            (pods, "spec.nodeName=", &[]),
            (pods, "metadata.name=a\\,b", &[]),
            (pods, "spec.hostNetwork=true", &[]),
            (nodes, "spec.unschedulable=false", &[]),
        ];
        for (resource, input, want) in cases {
            let selector = FieldSelector::parse(resource, input).unwrap();
            assert_eq!(selector.required_texts(), *want, "{input}");
        }
    }

    #[test]
    fn field_selector_exact() {
        let pods = find("", "v1", "pods").unwrap();
        let selector = FieldSelector::parse(pods, "metadata.name=demo,spec.nodeName!=x").unwrap();
        assert_eq!(selector.exact("metadata.name"), Some("demo"));
        assert_eq!(selector.exact("spec.nodeName"), None);
        assert_eq!(selector.exact("metadata.namespace"), None);
        assert!(FieldSelector::parse(pods, "").unwrap().is_empty());
    }
}
