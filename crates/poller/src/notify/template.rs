//! Notice bodies from templates (minijinja, Jinja2 syntax): the email body and, when a
//! `template_file` is given, a webhook's body.
//!
//! Rules it keeps:
//! - The default body is `templates/notice.txt.j2` (docs/dashboard.md shows it); the
//!   Alertmanager description uses it too, so every channel says the same.
//! - A template sees the notice's fields as the webhook JSON has them (`server`, `kind`,
//!   `level`, `state`, `previous`, `deficiencies`, `reason`, `deficient_since`, `ack`,
//!   `downtime`, `url`, `servers_behind`, `clock`, `summary`...) plus `deficient_for`
//!   (`12m`). Nothing is escaped (write `{{ summary | tojson }}` inside JSON); a field a
//!   template names that a notice lacks renders empty.
//! - A template that does not compile is refused with the config (file and line); one
//!   that fails to render makes the delivery fail, named by its file.

use minijinja::{AutoEscape, Environment};

use crate::notify::{for_how_long, Notice};

/// The default notice body.
pub const DEFAULT: &str = include_str!("templates/notice.txt.j2");

/// A compiled template.
pub struct Template {
    env: Environment<'static>,
    name: String,
}

impl Template {
    /// Compiles `source`, named `name` (its file) in errors.
    pub fn compile(name: &str, source: &str) -> Result<Template, String> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(name.to_string(), source.to_string()).map_err(|e| describe_error(name, &e))?;
        Ok(Template { env, name: name.to_string() })
    }

    /// The default notice body.
    pub fn default_body() -> Template {
        // The default is part of the binary and compiled by the tests: it cannot fail.
        Template::compile("notice.txt.j2", DEFAULT).unwrap_or_else(|e| unreachable!("the default template: {e}"))
    }

    /// Renders `notice`.
    pub fn render(&self, notice: &Notice) -> Result<String, String> {
        let mut ctx = serde_json::to_value(notice).map_err(|e| format!("{}: {e}", self.name))?;
        if let (Some(obj), Some(since)) = (ctx.as_object_mut(), notice.deficient_since) {
            obj.insert("deficient_for".into(), for_how_long(notice.at - since).into());
        }
        let t = self.env.get_template(&self.name).map_err(|e| describe_error(&self.name, &e))?;
        t.render(ctx).map_err(|e| describe_error(&self.name, &e))
    }
}

/// A minijinja error as one line: file, line and what.
fn describe_error(name: &str, e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{name}:{line}: {}", e.detail().unwrap_or(&e.kind().to_string())),
        None => format!("{name}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Ack, Downtime, ServerState};
    use crate::notify::{Condition, NoticeKind};
    use chrono::DateTime;
    use rollcall_protocol::{Deficiency, Severity};

    fn t(s: i64) -> chrono::DateTime<chrono::Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn notice() -> Notice {
        Notice {
            key: "told:1:mail-01".into(),
            kind: NoticeKind::Problem,
            server: "mail-01".into(),
            node: "poller-a".into(),
            at: t(720),
            level: "critical".into(),
            state: ServerState::Deficient,
            flapping: false,
            previous: Condition { level: "normal".into(), state: ServerState::Ok, flapping: false },
            deficiencies: vec![Deficiency {
                source: "service:smtp".into(),
                severity: Severity::Critical,
                summary: "refused".into(),
            }],
            reason: Some("service:smtp (critical): refused".into()),
            clock: None,
            summary: "mail-01 is deficient at level critical: service:smtp".into(),
            deficient_since: Some(t(0)),
            ack: Some(Ack {
                by: "ops".into(),
                at: t(60),
                comment: "on it".into(),
                level: String::new(),
                sources: vec![],
            }),
            downtime: Some(Downtime {
                id: 3,
                server: "mail-*".into(),
                starts_at: t(-60),
                ends_at: t(700),
                comment: "kernel upgrade".into(),
                by: "ops".into(),
                created_at: t(-60),
            }),
            url: Some("https://rollcall.example.org/servers/mail-01".into()),
            servers_behind: 2,
        }
    }

    #[test]
    fn the_default_body_says_what_an_on_call_person_needs() {
        let body = Template::default_body().render(&notice()).unwrap();
        for line in [
            "mail-01 is deficient at level critical: service:smtp\n\n",
            "Server:   mail-01\n",
            "Now:      level critical, state deficient\n",
            "Before:   level normal, state ok\n",
            "Why:      service:smtp (critical): refused\n",
            "(12m not fine)\n",
            "Acked:    by ops at 2027-01-15T08:01:00Z: on it\n",
            "Downtime: mail-* ended (",
            "): kernel upgrade\n",
            "Behind:   2 unreachable behind this one\n",
            "- service:smtp (critical): refused\n",
            "Details:  https://rollcall.example.org/servers/mail-01\n",
        ] {
            assert!(body.contains(line), "{line:?} missing from:\n{body}");
        }
        assert!(!body.contains("Clock:"), "no clock line without a clock order:\n{body}");
    }

    #[test]
    fn a_template_of_ones_own_renders_json_and_a_broken_one_is_named_by_line() {
        let t = Template::compile(
            "chat.json.j2",
            "{\"text\": {{ summary | tojson }}, \"for\": {{ deficient_for | tojson }}}",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&t.render(&notice()).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "text": "mail-01 is deficient at level critical: service:smtp", "for": "12m" })
        );
        // The chat example of docs/dashboard.md.
        let chat =
            Template::compile("chat.json.j2", "{\"text\": {{ (summary ~ (\" \" ~ url if url else \"\")) | tojson }}}")
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&chat.render(&notice()).unwrap()).unwrap();
        let want = "mail-01 is deficient at level critical: service:smtp https://rollcall.example.org/servers/mail-01";
        assert_eq!(v, serde_json::json!({ "text": want }));
        let e = Template::compile("chat.json.j2", "line one\n{% if %}").err().unwrap();
        assert!(e.starts_with("chat.json.j2:2: "), "{e}");
    }
}
