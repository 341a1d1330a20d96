//! The account mails: reset and email-change codes, and the notices
//! "password changed", "email being changed", "address in use" and "new
//! sign-in". Each has a built-in subject, text and HTML, replaceable by the
//! files in `[mail.templates.<kind>]`.
//!
//! Notices never carry a secret: their templates may not use `{{code}}`
//! (there is no code to give them), only `{{product}}`, `{{email}}`,
//! `{{new_email}}`, `{{time}}`, `{{ip}}` and `{{user_agent}}`.

use std::path::Path;

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use super::{Content, MailError, Set, escape_html};
use crate::config::{TemplatePaths, TemplateSetPaths};

const CODE_PLACEHOLDERS: [&str; 4] = ["code", "product", "lifetime", "email"];
const NOTICE_PLACEHOLDERS: [&str; 6] =
    ["product", "email", "new_email", "time", "ip", "user_agent"];

const RESET_SUBJECT: &str = "Your {{product}} password reset code";
const RESET_TEXT: &str = "Someone asked to reset the password of the {{product}} account {{email}}.

Your reset code is:

    {{code}}

It is valid for {{lifetime}}.

If you did not ask for this, ignore this message: your password stays as it \
is, and the code is of no use to anyone without access to your mailbox.
";

const CHANGE_CODE_SUBJECT: &str = "Confirm your new {{product}} email address";
const CHANGE_CODE_TEXT: &str = "To move your {{product}} account to {{email}}, enter this code:

    {{code}}

It is valid for {{lifetime}}.

If you did not ask for this, ignore this message: nothing changes.
";

const PASSWORD_CHANGED_SUBJECT: &str = "Your {{product}} password was changed";
const PASSWORD_CHANGED_TEXT: &str =
    "The password of your {{product}} account {{email}} was changed at {{time}}. \
Every other session of the account was signed out.

If this was you, you need not do anything.

If it was not you, reset your password now with \"Forgot password\" (that signs \
out every session), then look at your sessions.
";

const EMAIL_CHANGING_SUBJECT: &str = "Your {{product}} email address is being changed";
const EMAIL_CHANGING_TEXT: &str =
    "Someone signed in to your {{product}} account {{email}} asked at {{time}} to \
change its email address to {{new_email}}. The change happens only once the \
code sent to that address is entered.

If this was you, you need not do anything.

If it was not you, change your password now (or reset it with \"Forgot \
password\"): that signs out every other session, and the change cannot be \
completed without one. Then look at your sessions.
";

const EMAIL_IN_USE_SUBJECT: &str = "Your {{product}} account";
const EMAIL_IN_USE_TEXT: &str =
    "Someone asked at {{time}} to move another {{product}} account to {{email}}, \
but this address already belongs to your account.

Nothing has changed, and you need not do anything.
";

const NEW_SIGN_IN_SUBJECT: &str = "New sign-in to your {{product}} account";
const NEW_SIGN_IN_TEXT: &str =
    "Your {{product}} account {{email}} was signed in to from a browser it had not \
seen before.

    Time: {{time}}
    IP address: {{ip}}
    Browser: {{user_agent}}

If this was you, you need not do anything.

If it was not you, change your password now (that signs out every other \
session), then look at your sessions.
";

/// The template sets of the account mails.
#[derive(Debug, Clone)]
pub(super) struct AccountSets {
    reset_code: Set,
    email_change_code: Set,
    password_changed: Set,
    email_changing: Set,
    email_in_use: Set,
    new_sign_in: Set,
}

impl AccountSets {
    pub(super) fn from_config(paths: &TemplatePaths) -> Result<AccountSets, MailError> {
        Ok(AccountSets {
            reset_code: load(
                keys!("reset_code"),
                &paths.reset_code,
                RESET_SUBJECT,
                RESET_TEXT,
                true,
            )?,
            email_change_code: load(
                keys!("email_change_code"),
                &paths.email_change_code,
                CHANGE_CODE_SUBJECT,
                CHANGE_CODE_TEXT,
                true,
            )?,
            password_changed: load(
                keys!("password_changed"),
                &paths.password_changed,
                PASSWORD_CHANGED_SUBJECT,
                PASSWORD_CHANGED_TEXT,
                false,
            )?,
            email_changing: load(
                keys!("email_changing"),
                &paths.email_changing,
                EMAIL_CHANGING_SUBJECT,
                EMAIL_CHANGING_TEXT,
                false,
            )?,
            email_in_use: load(
                keys!("email_in_use"),
                &paths.email_in_use,
                EMAIL_IN_USE_SUBJECT,
                EMAIL_IN_USE_TEXT,
                false,
            )?,
            new_sign_in: load(
                keys!("new_sign_in"),
                &paths.new_sign_in,
                NEW_SIGN_IN_SUBJECT,
                NEW_SIGN_IN_TEXT,
                false,
            )?,
        })
    }

    /// The set for an account mail (the other kinds have their own).
    pub(super) fn for_content(&self, content: &Content) -> &Set {
        match content {
            Content::ResetCode { .. } => &self.reset_code,
            Content::EmailChangeCode { .. } => &self.email_change_code,
            Content::PasswordChanged { .. } => &self.password_changed,
            Content::EmailChanging { .. } => &self.email_changing,
            Content::EmailInUse => &self.email_in_use,
            Content::NewSignIn { .. } => &self.new_sign_in,
            // Not account mails; `render` never asks for these.
            Content::SignupCode { .. }
            | Content::AccountExists
            | Content::Test
            | Content::Invited { .. }
            | Content::SignupRefused
            | Content::SecondFactor { .. } => &self.email_in_use,
        }
    }
}

/// The values only account notices use.
#[derive(Default)]
pub(super) struct Details {
    pub(super) new_email: String,
    pub(super) time: String,
    pub(super) ip: String,
    pub(super) user_agent: String,
}

impl Details {
    pub(super) fn of(content: &Content) -> Details {
        match content {
            Content::PasswordChanged { at } => Details {
                time: format_utc(*at),
                ..Details::default()
            },
            Content::EmailChanging { new_email } => Details {
                new_email: new_email.clone(),
                time: format_utc(crate::store::now_millis()),
                ..Details::default()
            },
            Content::EmailInUse => Details {
                time: format_utc(crate::store::now_millis()),
                ..Details::default()
            },
            Content::Invited { expires_at } => Details {
                time: format_utc(*expires_at),
                ..Details::default()
            },
            Content::SecondFactor { at, .. } => Details {
                time: format_utc(*at),
                ..Details::default()
            },
            Content::NewSignIn { at, ip, user_agent } => Details {
                time: format_utc(*at),
                ip: ip.clone(),
                user_agent: user_agent.clone().unwrap_or_else(|| "unknown".into()),
                ..Details::default()
            },
            _ => Details::default(),
        }
    }
}

/// The config keys of one kind's subject, text and HTML files.
macro_rules! keys {
    ($kind:literal) => {
        Keys {
            subject: concat!("mail.templates.", $kind, ".subject"),
            text: concat!("mail.templates.", $kind, ".text"),
            html: concat!("mail.templates.", $kind, ".html"),
        }
    };
}
use keys;

/// Config keys, named in errors.
struct Keys {
    subject: &'static str,
    text: &'static str,
    html: &'static str,
}

/// One kind's templates: files where configured, built-ins otherwise.
fn load(
    keys: Keys,
    paths: &TemplateSetPaths,
    subject: &str,
    text: &str,
    carries_code: bool,
) -> Result<Set, MailError> {
    let key = |part: &str| -> &'static str {
        match part {
            "subject" => keys.subject,
            "text" => keys.text,
            _ => keys.html,
        }
    };
    let read = |part: &str, path: Option<&Path>| -> Result<Option<String>, MailError> {
        match path {
            None => Ok(None),
            Some(p) => {
                std::fs::read_to_string(p)
                    .map(Some)
                    .map_err(|source| MailError::TemplateRead {
                        key: key(part),
                        path: p.to_path_buf(),
                        source,
                    })
            }
        }
    };
    let text = read("text", paths.text.as_deref())?.unwrap_or_else(|| text.to_string());
    let set = Set {
        subject: read("subject", paths.subject.as_deref())?
            .unwrap_or_else(|| subject.to_string())
            .trim()
            .to_string(),
        html: read("html", paths.html.as_deref())?.unwrap_or_else(|| html_from_text(&text)),
        text,
    };
    let allowed: &[&str] = if carries_code {
        &CODE_PLACEHOLDERS
    } else {
        &NOTICE_PLACEHOLDERS
    };
    for (part, body) in [
        ("subject", &set.subject),
        ("text", &set.text),
        ("html", &set.html),
    ] {
        check_placeholders(key(part), body, allowed)?;
    }
    if set.subject.contains(['\r', '\n']) {
        return Err(MailError::Template {
            key: key("subject"),
            message: "must be a single line".into(),
        });
    }
    if set.subject.contains("{{code}}") {
        return Err(MailError::Template {
            key: key("subject"),
            message: "must not show the code (subjects appear in notifications and lists)".into(),
        });
    }
    if carries_code {
        for (part, body) in [("text", &set.text), ("html", &set.html)] {
            if !body.contains("{{code}}") {
                return Err(MailError::Template {
                    key: key(part),
                    message: "must contain {{code}}, or the mail carries no code".into(),
                });
            }
        }
    }
    Ok(set)
}

/// Refuses `{{name}}` placeholders outside `allowed`: a typo, or a notice
/// asking for a code it must never carry.
fn check_placeholders(
    key: &'static str,
    template: &str,
    allowed: &[&str],
) -> Result<(), MailError> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !allowed.contains(&name) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{{{{{a}}}}}")).collect();
            return Err(MailError::Template {
                key,
                message: format!(
                    "unknown placeholder {{{{{name}}}}}; this mail can use {}",
                    list.join(", ")
                ),
            });
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// A plain HTML body from a text template: one paragraph per blank-line
/// block, indented lines kept apart. Placeholders survive (they are
/// escaped when filled).
fn html_from_text(text: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif; line-height: 1.5\">\n",
    );
    for block in text
        .split("\n\n")
        .map(str::trim_end)
        .filter(|b| !b.trim().is_empty())
    {
        let indented = block.lines().all(|l| l.starts_with("    "));
        out.push_str(if indented {
            "<p style=\"font-family: monospace; font-size: 18px\">"
        } else {
            "<p>"
        });
        for (i, line) in block.lines().enumerate() {
            if i > 0 {
                out.push_str(if indented { "<br>\n" } else { "\n" });
            }
            escape_html(line.trim(), &mut out);
        }
        out.push_str("</p>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// `2026-11-28 18:30:05 UTC` from Unix milliseconds.
pub fn format_utc(ms: u64) -> String {
    const LAYOUT: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    let at = i64::try_from(ms / 1000)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        // Beyond the year 9999: not a time the server produces.
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(LAYOUT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_890_605_000), "2026-11-28 18:30:05 UTC");
    }

    #[test]
    fn notices_cannot_ask_for_a_code_and_code_mails_must_carry_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "Your code {{code}}").unwrap();
        let set = TemplateSetPaths {
            text: Some(p.clone()),
            ..TemplateSetPaths::default()
        };
        let e = load(keys!("password_changed"), &set, "s", "t", false).unwrap_err();
        assert!(
            e.to_string()
                .contains("mail.templates.password_changed.text"),
            "{e}"
        );
        assert!(load(keys!("reset_code"), &set, "s", "t", true).is_ok());
        std::fs::write(&p, "No code here {{email}}").unwrap();
        let e = load(keys!("reset_code"), &set, "s", "t", true).unwrap_err();
        assert!(e.to_string().contains("{{code}}"), "{e}");
    }

    #[test]
    fn overrides_replace_one_kind_and_render_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("new.txt");
        std::fs::write(&text, "Hi {{email}}: {{ip}} / {{user_agent}} at {{time}}").unwrap();
        let cfg = crate::config::Config::parse(
            &format!(
                "[mail.templates.new_sign_in]\ntext = \"{}\"\n",
                text.display()
            ),
            "t",
        )
        .unwrap();
        let composer = super::super::Composer::from_config(&cfg.mail).unwrap();
        let content = Content::NewSignIn {
            at: 1_795_890_605_000,
            ip: "192.0.2.7".into(),
            user_agent: Some("Agent <x>".into()),
        };
        let mail = composer.render("a@x.io", "tok", &content).unwrap();
        assert_eq!(
            mail.text,
            "Hi a@x.io: 192.0.2.7 / Agent <x> at 2026-11-28 18:30:05 UTC"
        );
        assert_eq!(mail.subject, "New sign-in to your Flowtask account");
        let raw = String::from_utf8(mail.bytes).unwrap();
        assert!(raw.contains("Agent &lt;x&gt;"), "HTML part escapes: {raw}");
        // Other kinds keep their built-in wording.
        let other = composer
            .render("a@x.io", "tok", &Content::PasswordChanged { at: 0 })
            .unwrap();
        assert!(
            other.text.contains("was changed at 1970-01-01"),
            "{}",
            other.text
        );
    }

    #[test]
    fn default_html_escapes_values_and_keeps_paragraphs() {
        let html = html_from_text("A & B {{email}}\n\n    {{code}}\n");
        assert!(html.contains("<p>A &amp; B {{email}}</p>"), "{html}");
        assert!(html.contains("monospace"), "{html}");
    }
}
