//! The second-factor notices: a factor was added or removed, a recovery
//! code was used, the codes were renewed, an operator reset them. Built-in
//! wording only; like every notice they carry no secret, only
//! `{{product}}`, `{{email}}` and `{{time}}`.

use crate::store::MfaEvent;

const ADVICE: &str = "If this was you, you need not do anything.

If it was not you, someone may know your password: reset it now with \
\"Forgot password\" (that signs out every session), then look at your \
sessions and second factors.
";

/// Subject and text of the notice for `event`.
pub(super) fn notice(event: MfaEvent) -> (&'static str, String) {
    let (subject, what) = match event {
        MfaEvent::TotpEnabled => (
            "Two-step sign-in was turned on for your {{product}} account",
            "An authenticator app was set up as a second factor",
        ),
        MfaEvent::TotpDisabled => (
            "An authenticator app was removed from your {{product}} account",
            "The authenticator app was removed as a second factor",
        ),
        MfaEvent::PasskeyAdded => (
            "A passkey was added to your {{product}} account",
            "A passkey was added",
        ),
        MfaEvent::PasskeyRemoved => (
            "A passkey was removed from your {{product}} account",
            "A passkey was removed",
        ),
        MfaEvent::RecoveryCodeUsed => (
            "A recovery code was used for your {{product}} account",
            "A recovery code was used to sign in (each code works once)",
        ),
        MfaEvent::RecoveryCodesRenewed => (
            "New recovery codes for your {{product}} account",
            "A new set of recovery codes was made; the old codes no longer work",
        ),
        MfaEvent::ResetByAdmin => (
            "Your {{product}} second factors were removed",
            "An administrator removed every second factor and signed out every session",
        ),
    };
    (
        subject,
        format!("{what} on the {{{{product}}}} account {{{{email}}}} at {{{{time}}}}.\n\n{ADVICE}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_use_only_notice_placeholders() {
        let (subject, text) = notice(MfaEvent::RecoveryCodeUsed);
        assert!(subject.contains("recovery code"));
        assert!(text.contains("{{email}} at {{time}}"), "{text}");
        assert!(!text.contains("{{code}}"));
    }
}
