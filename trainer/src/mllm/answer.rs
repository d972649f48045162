//! From a chat-completion response body to an answer: the envelope (choices, message,
//! usage), the answer text (a plain string or an array of content parts, with reasoning
//! kept apart), and the name or round-1 context inside it (JSON, JSON in code fences or
//! in prose, or plain text), refusals included.
//!
//! Nothing here drops an answer: every outcome is an [`Interpretation`] with a
//! [`Status`], and the raw text is kept by the caller.

use super::prompt::Context1;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Token usage as the server reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The parts of a chat-completion response the labeller keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The answer text (content parts joined), `<think>` blocks removed.
    pub content: String,
    /// Reasoning the server sent beside the answer (`reasoning_content`, `reasoning`,
    /// or `<think>` blocks inside the content).
    pub reasoning: Option<String>,
    /// The `refusal` field, when the server filled it.
    pub refusal: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// The model the server says answered.
    pub model: Option<String>,
}

/// How an answer was understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A JSON object with the asked-for keys was found.
    Json,
    /// No JSON: the name is the answer text, cleaned of common wrapping.
    Text,
    /// The model declined to answer.
    Refused,
    /// An answer that could not be understood (truncated JSON, empty, no name, ...).
    Malformed,
}

impl Status {
    /// Whether the answer carries a usable name or context.
    pub fn is_usable(self) -> bool {
        matches!(self, Status::Json | Status::Text)
    }
}

/// A naming or round-1 answer, understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpretation {
    pub status: Status,
    /// The name (round 2), when usable.
    pub name: Option<String>,
    /// The context (round 1), when usable.
    pub context: Option<Context1>,
    /// Why the answer is refused or malformed.
    pub problem: Option<String>,
}

impl Interpretation {
    fn bad(status: Status, problem: impl Into<String>) -> Self {
        Interpretation {
            status,
            name: None,
            context: None,
            problem: Some(problem.into()),
        }
    }
}

/// Parses a response body. `Err` carries why the body is not a chat completion (not JSON,
/// no `choices`, an `error` object): the caller treats that as a transport problem.
pub fn parse_completion(body: &[u8]) -> Result<Reply, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("response body is not JSON ({e})"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("response carries an error: {}", error_message(err)));
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| "response has no `choices`".to_string())?;
    let message = choice
        .get("message")
        .ok_or_else(|| "response choice has no `message`".to_string())?;
    let mut content = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => join_parts(parts),
        Some(other) => other.to_string(),
    };
    let mut reasoning: Vec<String> = ["reasoning_content", "reasoning"]
        .iter()
        .filter_map(|k| message.get(*k).and_then(Value::as_str))
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .collect();
    if let Some((answer, think)) = split_think(&content) {
        content = answer;
        reasoning.push(think);
    }
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string);
    let usage = v.get("usage").and_then(|u| {
        let p = u.get("prompt_tokens").and_then(Value::as_u64);
        let c = u.get("completion_tokens").and_then(Value::as_u64);
        (p.is_some() || c.is_some()).then(|| Usage {
            prompt_tokens: p.unwrap_or(0),
            completion_tokens: c.unwrap_or(0),
        })
    });
    Ok(Reply {
        content,
        reasoning: (!reasoning.is_empty()).then(|| reasoning.join("\n")),
        refusal,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage,
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

/// The message of an OpenAI-style `error` value (object with `message`, or a string).
pub fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string()),
        other => other.to_string(),
    }
}

/// Joins the text of content parts (`{"type": "text", "text": ...}`, `output_text`, or bare
/// strings); reasoning parts are not part of the answer.
fn join_parts(parts: &[Value]) -> String {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Value::String(s) => out.push(s.as_str()),
            Value::Object(o) => {
                let kind = o.get("type").and_then(Value::as_str).unwrap_or("text");
                if kind.contains("reasoning") || kind == "thinking" {
                    continue;
                }
                if let Some(t) = o.get("text").and_then(Value::as_str) {
                    out.push(t);
                }
            }
            _ => {}
        }
    }
    out.join("")
}

/// Splits `<think>...</think>` blocks (also an unclosed opening one, or a closing tag
/// without its opening tag, as some servers strip the first) off the answer.
fn split_think(content: &str) -> Option<(String, String)> {
    let lower = content.to_ascii_lowercase();
    if let Some(end) = lower.rfind("</think>") {
        let start = lower[..end]
            .find("<think>")
            .map(|s| s + "<think>".len())
            .unwrap_or(0);
        let before = lower[..end]
            .find("<think>")
            .map(|s| &content[..s])
            .unwrap_or("");
        let think = content[start..end].trim().to_string();
        let answer = format!("{}{}", before, &content[end + "</think>".len()..]);
        return Some((answer.trim().to_string(), think));
    }
    if let Some(s) = lower.find("<think>") {
        // Thinking never finished (often `finish_reason: length`): no answer.
        return Some((
            content[..s].trim().to_string(),
            content[s + "<think>".len()..].trim().to_string(),
        ));
    }
    None
}

/// Understands a round-2 (naming) answer.
pub fn interpret_name(reply: &Reply) -> Interpretation {
    if let Some(r) = &reply.refusal {
        return Interpretation::bad(Status::Refused, format!("refusal: {}", clip(r, 200)));
    }
    let text = reply.content.trim();
    if text.is_empty() {
        let why = match reply.finish_reason.as_deref() {
            Some("length") => "empty answer (stopped at the token limit; raise --max-tokens)",
            _ => "empty answer",
        };
        return Interpretation::bad(Status::Malformed, why);
    }
    match find_json_object(text) {
        JsonFound::Object(obj) => match name_in(&obj) {
            Some(name) => Interpretation {
                status: Status::Json,
                name: Some(name),
                context: None,
                problem: None,
            },
            None => Interpretation::bad(Status::Malformed, "JSON answer without a `name`"),
        },
        JsonFound::Broken => Interpretation::bad(Status::Malformed, "truncated or invalid JSON"),
        JsonFound::None => {
            if looks_like_refusal(text) {
                return Interpretation::bad(
                    Status::Refused,
                    format!("refusal text: {}", clip(text, 200)),
                );
            }
            let name = strip_wrapping(text);
            if name.is_empty() || name.chars().count() > 120 || name.lines().count() > 2 {
                return Interpretation::bad(Status::Malformed, "prose without a JSON answer");
            }
            Interpretation {
                status: Status::Text,
                name: Some(name),
                context: None,
                problem: None,
            }
        }
    }
}

/// Understands a round-1 answer (category, expert, granularity).
pub fn interpret_context(reply: &Reply) -> Interpretation {
    if let Some(r) = &reply.refusal {
        return Interpretation::bad(Status::Refused, format!("refusal: {}", clip(r, 200)));
    }
    let text = reply.content.trim();
    match find_json_object(text) {
        JsonFound::Object(obj) => {
            let get = |keys: &[&str]| keys.iter().find_map(|k| string_field(&obj, k));
            match get(&["category", "super_category", "supercategory"]) {
                Some(category) => Interpretation {
                    status: Status::Json,
                    name: None,
                    context: Some(Context1 {
                        category,
                        expert: get(&["expert", "expert_role", "role"]).unwrap_or_default(),
                        granularity: get(&["granularity", "attribute", "level"])
                            .unwrap_or_default(),
                    }),
                    problem: None,
                },
                None => Interpretation::bad(Status::Malformed, "JSON answer without a `category`"),
            }
        }
        JsonFound::Broken => Interpretation::bad(Status::Malformed, "truncated or invalid JSON"),
        JsonFound::None if looks_like_refusal(text) => Interpretation::bad(
            Status::Refused,
            format!("refusal text: {}", clip(text, 200)),
        ),
        JsonFound::None => Interpretation::bad(Status::Malformed, "no JSON answer"),
    }
}

enum JsonFound {
    Object(serde_json::Map<String, Value>),
    /// Something that starts like JSON but does not parse.
    Broken,
    None,
}

/// The first JSON object in the text: inside a code fence, the whole text, or a balanced
/// `{...}` inside prose.
fn find_json_object(text: &str) -> JsonFound {
    let mut saw_brace = false;
    for candidate in fenced_blocks(text).into_iter().chain(std::iter::once(text)) {
        let candidate = candidate.trim();
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(candidate) {
            return JsonFound::Object(o);
        }
        let mut from = 0;
        while let Some(off) = candidate[from..].find('{') {
            saw_brace = true;
            let start = from + off;
            if let Some(end) = balanced_end(&candidate[start..]) {
                if let Ok(Value::Object(o)) =
                    serde_json::from_str::<Value>(&candidate[start..start + end])
                {
                    return JsonFound::Object(o);
                }
            }
            from = start + 1;
        }
    }
    if saw_brace {
        JsonFound::Broken
    } else {
        JsonFound::None
    }
}

/// Bodies of ``` fences (with or without a language tag); an unclosed fence runs to the end.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(s) = rest.find("```") {
        let after = &rest[s + 3..];
        let body_start = after.find('\n').map(|n| n + 1).unwrap_or(0);
        let tag = &after[..body_start];
        let body_start = if tag.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
            body_start
        } else {
            0
        };
        let body = &after[body_start..];
        match body.find("```") {
            Some(e) => {
                out.push(&body[..e]);
                rest = &body[e + 3..];
            }
            None => {
                out.push(body);
                break;
            }
        }
    }
    out
}

/// Length of the balanced `{...}` at the start of `s` (strings and escapes respected).
fn balanced_end(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if in_str {
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn string_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.as_str())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The name in a JSON answer: the `name` key or a common alias; failing those, the only
/// string value of the object.
fn name_in(obj: &serde_json::Map<String, Value>) -> Option<String> {
    const KEYS: [&str; 9] = [
        "name",
        "most_specific_name",
        "species",
        "answer",
        "label",
        "class",
        "type",
        "model",
        "prediction",
    ];
    if let Some(n) = KEYS.iter().find_map(|k| string_field(obj, k)) {
        return Some(n);
    }
    let strings: Vec<&str> = obj
        .values()
        .filter_map(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .collect();
    match strings.as_slice() {
        [only] => Some(only.trim().to_string()),
        _ => None,
    }
}

fn looks_like_refusal(text: &str) -> bool {
    let t = text.to_lowercase().replace('\u{2019}', "'");
    const OPENERS: [&str; 10] = [
        "i'm sorry",
        "i am sorry",
        "sorry,",
        "i cannot",
        "i can't",
        "i can not",
        "i'm unable",
        "i am unable",
        "i won't",
        "as an ai",
    ];
    OPENERS.iter().any(|o| t.starts_with(o))
        || t.contains("i can't help with")
        || t.contains("cannot assist with")
}

/// Removes common wrapping around a plain-text name: quotes, backticks, bold marks, a
/// trailing period, and lead-ins such as "The bird in the image is a".
fn strip_wrapping(text: &str) -> String {
    let mut t = text
        .trim()
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let lower = t.to_ascii_lowercase();
    const LEADS: [&str; 10] = [
        " is most likely an ",
        " is most likely a ",
        " is likely an ",
        " is likely a ",
        " appears to be an ",
        " appears to be a ",
        " looks like an ",
        " looks like a ",
        " is an ",
        " is a ",
    ];
    for lead in LEADS {
        if let Some(p) = lower.rfind(lead) {
            t = t[p + lead.len()..].to_string();
            break;
        }
    }
    for prefix in ["answer:", "name:", "species:"] {
        if t.to_ascii_lowercase().starts_with(prefix) {
            t = t[prefix.len()..].to_string();
        }
    }
    let trimmed = t
        .trim()
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '*' | '.' | '!' | ' '));
    trimmed.to_string()
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(message: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 12}
        }))
        .unwrap()
    }

    fn name_of(message: Value) -> Interpretation {
        interpret_name(&parse_completion(&body(message)).unwrap())
    }

    fn check(message: Value, status: Status, name: Option<&str>) {
        let got = name_of(message.clone());
        assert_eq!(got.status, status, "{message}: {got:?}");
        assert_eq!(got.name.as_deref(), name, "{message}");
    }

    #[test]
    fn plain_json_string_content() {
        check(
            serde_json::json!({"role": "assistant", "content": "{\"name\": \"Horned Grebe\"}"}),
            Status::Json,
            Some("Horned Grebe"),
        );
    }

    #[test]
    fn content_part_arrays() {
        check(
            serde_json::json!({"content": [{"type": "text", "text": "{\"name\": "}, {"type": "text", "text": "\"Cedar Waxwing\"}"}]}),
            Status::Json,
            Some("Cedar Waxwing"),
        );
    }

    #[test]
    fn json_in_fences_and_prose() {
        check(
            serde_json::json!({"content": "Sure! Here it is:\n```json\n{\"name\": \"Pied-billed Grebe\", \"confidence\": 0.8}\n```"}),
            Status::Json,
            Some("Pied-billed Grebe"),
        );
        check(
            serde_json::json!({"content": "Judging by the crest, my answer is {\"name\": \"Bohemian Waxwing\"}."}),
            Status::Json,
            Some("Bohemian Waxwing"),
        );
        check(
            serde_json::json!({"content": "```\n{\"species\": \"Blue Grosbeak\"}\n```"}),
            Status::Json,
            Some("Blue Grosbeak"),
        );
    }

    #[test]
    fn reasoning_beside_the_answer_is_not_the_answer() {
        let m = serde_json::json!({"content": "{\"name\": \"Scarlet Tanager\"}", "reasoning_content": "It could be a Summer Tanager {\"name\": \"Summer Tanager\"}"});
        let reply = parse_completion(&body(m.clone())).unwrap();
        assert!(reply.reasoning.as_deref().unwrap().contains("Summer"));
        check(m, Status::Json, Some("Scarlet Tanager"));
        check(
            serde_json::json!({"content": "<think>maybe {\"name\": \"Rufous Hummingbird\"}</think>\n{\"name\": \"Anna's Hummingbird\"}"}),
            Status::Json,
            Some("Anna's Hummingbird"),
        );
        check(
            serde_json::json!({"content": "{\"name\": \"Pine Grosbeak\"}", "reasoning": "red head"}),
            Status::Json,
            Some("Pine Grosbeak"),
        );
    }

    #[test]
    fn refusals_are_recorded_as_refused() {
        check(
            serde_json::json!({"content": null, "refusal": "I can't help with that."}),
            Status::Refused,
            None,
        );
        check(
            serde_json::json!({"content": "I'm sorry, but I can't identify this image."}),
            Status::Refused,
            None,
        );
    }

    #[test]
    fn malformed_answers_are_kept_as_malformed() {
        check(
            serde_json::json!({"content": "{\"name\": \"Horned Gr"}),
            Status::Malformed,
            None,
        );
        check(serde_json::json!({"content": ""}), Status::Malformed, None);
        check(
            serde_json::json!({"content": "{\"confidence\": 0.3, \"note\": \"unclear\", \"x\": \"y\"}"}),
            Status::Malformed,
            None,
        );
        check(
            serde_json::json!({"content": "<think>still thinking about the"}),
            Status::Malformed,
            None,
        );
    }

    #[test]
    fn plain_text_names_lose_their_wrapping() {
        check(
            serde_json::json!({"content": "The bird in this image is most likely a Horned Grebe."}),
            Status::Text,
            Some("Horned Grebe"),
        );
        check(
            serde_json::json!({"content": "**Eared Grebe**"}),
            Status::Text,
            Some("Eared Grebe"),
        );
        check(
            serde_json::json!({"content": "Answer: indigo bunting"}),
            Status::Text,
            Some("indigo bunting"),
        );
    }

    #[test]
    fn envelope_problems_are_errors() {
        assert!(parse_completion(b"<html>bad gateway</html>").is_err());
        assert!(
            parse_completion(b"{\"error\": {\"message\": \"overloaded\"}}")
                .unwrap_err()
                .contains("overloaded")
        );
        assert!(parse_completion(b"{\"choices\": []}").is_err());
    }

    #[test]
    fn usage_and_model_are_read() {
        let r = parse_completion(&body(serde_json::json!({"content": "x"}))).unwrap();
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 300,
                completion_tokens: 12
            })
        );
        assert_eq!(r.model.as_deref(), Some("m"));
    }

    #[test]
    fn round_one_context() {
        let r = parse_completion(&body(serde_json::json!({"content": "```json\n{\"category\": \"bird\", \"expert\": \"ornithologist\", \"granularity\": \"species\"}\n```"}))).unwrap();
        let i = interpret_context(&r);
        assert_eq!(i.status, Status::Json);
        assert_eq!(i.context.unwrap().expert, "ornithologist");
    }
}
