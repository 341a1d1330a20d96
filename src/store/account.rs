//! Records of account self-service: password-reset and email-change codes,
//! the mails queued with them, and what the operator may see about them.
//!
//! Each purpose keeps its codes under its own key, so a code issued for one
//! purpose is never even looked up by another (sign-up codes live apart, in
//! the `otps` table).

use serde::{Deserialize, Serialize};

use super::{MailKind, PendingOtp, UnixMillis, User};

/// What an account code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePurpose {
    /// `POST /api/v1/user/password/reset`, keyed by the account's email.
    PasswordReset,
    /// `POST /api/v1/user/email/verify`, keyed by the user id.
    EmailChange,
}

impl CodePurpose {
    /// The stored key. The prefixes keep purposes apart; `:` cannot occur in
    /// a normalised email, so no key of one purpose spells one of another.
    pub fn key(self, subject: &str) -> String {
        match self {
            CodePurpose::PasswordReset => format!("reset:{subject}"),
            CodePurpose::EmailChange => format!("email-change:{subject}"),
        }
    }
}

/// A reset or email-change code waiting to be used; only its salted hash is
/// kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountCode {
    pub pending: PendingOtp,
    /// The account the code was issued for. `None` for the decoy kept for an
    /// unknown address: it is never mailed and never completes anything,
    /// but wrong guesses count against it exactly as against a real code.
    pub user_id: Option<u64>,
    /// Email change: the address the account moves to.
    #[serde(default)]
    pub new_email: Option<String>,
}

/// The verdict on one submitted account code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCodeCheck {
    /// No code is pending under this key.
    Missing,
    /// The code's lifetime is over; it has been removed.
    Expired,
    /// Too many wrong codes were tried; the code is void.
    Exhausted,
    /// Wrong code; the attempt was counted.
    Wrong,
    /// Right code; it stays pending until the completing call consumes it.
    Valid(AccountCode),
}

/// A mail without a secret, queued next to a change.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: MailKind,
    pub deadline: UnixMillis,
    pub message_token: String,
}

/// The mails an email-change request queues: the code to the new address
/// (or, if that address has an account, `in_use` to its owner instead) and
/// `old_address` to the account's current address. (No `Debug`: it holds
/// the code.)
#[derive(Clone)]
pub struct EmailChangeMails {
    pub code: super::OtpMail,
    pub in_use: Notice,
    pub old_address: Notice,
}

/// The result of a completed email change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailChanged {
    /// The user as stored after the change.
    pub user: User,
    pub old_email: String,
    /// Every other session of the account, now ended.
    pub ended_sessions: Vec<super::TokenHash>,
}

/// Which account codes are pending for one user (never the codes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCodes {
    pub password_reset: bool,
    pub email_change: bool,
}

/// Everything the store holds that names one address, for checking that an
/// account deletion left nothing behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traces {
    pub user: bool,
    pub sessions: usize,
    /// Pending codes of any purpose for the address (or its account).
    pub codes: usize,
    /// Queued mails to the address.
    pub mails: usize,
    /// Send-rate windows kept for the address (or its account).
    pub send_counters: usize,
}
