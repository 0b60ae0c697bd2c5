package s3

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/smithy-go"

	"github.com/agentd/agentd"
)

// classify turns an error of the SDK into an *agentd.Error whose kind says
// what the caller can do about it. The SDK's error is kept as the cause, for
// logs: it holds the operation, status, S3 error code and request ID, never
// credentials (the secret key is never sent, so no server can echo it).
func classify(op string, err error) error {
	var ce *credentialsError
	if errors.As(err, &ce) {
		return &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op,
			Message: "no credentials for the store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", Err: err}
	}
	status, code := 0, ""
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	kind, msg := kindOf(status, code)
	return &agentd.Error{Kind: kind, Op: op, Message: msg, Err: err}
}

// kindOf classifies an S3 answer by its status and error code (the code is
// "" when the answer had no body, as for HEAD, and the status is 0 when
// there was no answer at all).
func kindOf(status int, code string) (agentd.Kind, string) {
	switch code {
	case "NoSuchKey":
		return agentd.KindNotFound, "no such object"
	case "NoSuchBucket":
		// Not KindNotFound: the store is misconfigured; no key can be
		// found or written.
		return agentd.KindStorageUnavailable, "the bucket does not exist"
	case "PreconditionFailed", "NotModified":
		return agentd.KindPreconditionFailed, "the object's etag does not meet the condition"
	case "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
		"ServiceUnavailable", "RequestTimeTooSkewed":
		return agentd.KindStorageUnavailable, fmt.Sprintf("the store cannot serve the request now (%s)", code)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
		"TokenRefreshRequired", "AllAccessDisabled", "AccountProblem":
		return agentd.KindStorageUnavailable, fmt.Sprintf("the store refused agentd's credentials (%s)", code)
	case "EntityTooLarge", "MetadataTooLarge", "KeyTooLongError", "MaxMessageLengthExceeded":
		return agentd.KindTooLarge, fmt.Sprintf("the store refused the request as too large (%s)", code)
	case "InvalidRange":
		return agentd.KindInvalid, "the range does not fit the object"
	}
	switch {
	case status == 0:
		return agentd.KindStorageUnavailable, "the store could not be reached"
	case status == http.StatusNotFound:
		return agentd.KindNotFound, "no such object"
	case status == http.StatusPreconditionFailed || status == http.StatusNotModified:
		return agentd.KindPreconditionFailed, "the object's etag does not meet the condition"
	case status == http.StatusRequestedRangeNotSatisfiable:
		return agentd.KindInvalid, "the range does not fit the object"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return agentd.KindStorageUnavailable, "the store refused agentd's credentials"
	case status == http.StatusConflict:
		// S3's 409s: a conflicting operation in progress, or (on servers
		// over a file tree) a key that clashes with a "directory".
		return agentd.KindConflict, fmt.Sprintf("the store refused the request as conflicting (%s)", orStatus(code, status))
	case status == http.StatusRequestEntityTooLarge:
		return agentd.KindTooLarge, "the store refused the request as too large"
	case status == http.StatusTooManyRequests || status >= 500:
		return agentd.KindStorageUnavailable, fmt.Sprintf("the store cannot serve the request now (HTTP %d)", status)
	case status >= 400:
		return agentd.KindInvalid, fmt.Sprintf("the store refused the request (%s)", orStatus(code, status))
	}
	// An answer that is no error, yet failed: a body the SDK could not
	// read or parse.
	return agentd.KindStorageUnavailable, "the store's answer could not be read"
}

// orStatus names an answer by its error code, or by its status without one.
func orStatus(code string, status int) string {
	if code != "" {
		return code
	}
	return fmt.Sprintf("HTTP %d", status)
}
