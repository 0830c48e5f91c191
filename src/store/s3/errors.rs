//! Error wording for S3 failures: the service's code and message with a
//! hint for the usual mistakes, or the whole chain of network causes.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

pub(super) use crate::error::error_chain;

/// The service's error code and message for a service error (with a hint
/// for the usual configuration mistakes), else the whole chain of causes, so
/// "dispatch failure" is never all an operator sees.
pub(super) fn sdk_reason<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let SdkError::ServiceError(service) = err else {
        return error_chain(err);
    };
    let status = service.raw().status().as_u16();
    let inner = service.err();
    let mut reason = match (inner.code(), inner.message()) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        (None, _) => format!("HTTP {status}: {}", error_chain(inner)),
    };
    let hint = match inner.code() {
        Some("SignatureDoesNotMatch") => Some("check AWS_SECRET_ACCESS_KEY"),
        Some("InvalidAccessKeyId") | Some("NotSignedUp") => Some("check AWS_ACCESS_KEY_ID"),
        Some("AccessDenied") => Some("the credentials lack a permission on this bucket or key"),
        Some("NoSuchBucket") => Some("check AWS_S3_BUCKET (and AWS_ENDPOINT_URL)"),
        Some("PermanentRedirect") | Some("AuthorizationHeaderMalformed") => {
            Some("check AWS_REGION")
        }
        _ => None,
    };
    if let Some(hint) = hint {
        reason.push_str("; ");
        reason.push_str(hint);
    }
    reason
}
