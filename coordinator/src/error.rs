//! Kafka error codes used by the coordinator, mapped to their wire numbers in
//! exactly one place ([`ErrorCode::code`]).
//!
//! The coordinator never builds protocol messages, so it does not depend on a
//! protocol crate; the server converts [`ErrorCode::code`] into whatever its
//! codec wants. A unit test checks every number against `kafka-protocol`'s
//! `ResponseError` so the two can never drift apart.

/// The subset of Kafka's error codes the group coordinator can return.
///
/// `None` is success (wire code 0). Codes are never reused with another
/// meaning: each variant corresponds to exactly one Kafka error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: success.
    None,
    /// -1: an unexpected server error.
    UnknownServerError,
    /// 12: the metadata string of a commit is longer than allowed.
    OffsetMetadataTooLarge,
    /// 14: the coordinator is still replaying its internal log.
    CoordinatorLoadInProgress,
    /// 15: the coordinator cannot serve the group right now (dead group,
    /// coordinator full, failed write to the internal log).
    CoordinatorNotAvailable,
    /// 16: this broker does not own the group (returned by the server, listed
    /// here so the mapping lives in one place).
    NotCoordinator,
    /// 22: the request carries a generation that is not the group's current one.
    IllegalGeneration,
    /// 23: the member's protocol type or protocols do not match the group.
    InconsistentGroupProtocol,
    /// 24: the group id is empty.
    InvalidGroupId,
    /// 25: the member id is not known to the group.
    UnknownMemberId,
    /// 26: the session timeout is outside the configured bounds.
    InvalidSessionTimeout,
    /// 27: the group is rebalancing; the member must rejoin.
    RebalanceInProgress,
    /// 28: the commit could not be stored because it is too large.
    InvalidCommitOffsetSize,
    /// 68: the group still has members.
    NonEmptyGroup,
    /// 69: the group does not exist.
    GroupIdNotFound,
    /// 79: first JoinGroup of a dynamic member (v4+): retry with the member id
    /// carried by this response.
    MemberIdRequired,
    /// 81: the group has reached `max_members_per_group`.
    GroupMaxSizeReached,
    /// 82: another member with the same `group.instance.id` replaced this one.
    FencedInstanceId,
    /// 86: OffsetDelete of a topic the group is subscribed to.
    GroupSubscribedToTopic,
}

impl ErrorCode {
    /// The Kafka wire code of this error.
    pub const fn code(self) -> i16 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::UnknownServerError => -1,
            ErrorCode::OffsetMetadataTooLarge => 12,
            ErrorCode::CoordinatorLoadInProgress => 14,
            ErrorCode::CoordinatorNotAvailable => 15,
            ErrorCode::NotCoordinator => 16,
            ErrorCode::IllegalGeneration => 22,
            ErrorCode::InconsistentGroupProtocol => 23,
            ErrorCode::InvalidGroupId => 24,
            ErrorCode::UnknownMemberId => 25,
            ErrorCode::InvalidSessionTimeout => 26,
            ErrorCode::RebalanceInProgress => 27,
            ErrorCode::InvalidCommitOffsetSize => 28,
            ErrorCode::NonEmptyGroup => 68,
            ErrorCode::GroupIdNotFound => 69,
            ErrorCode::MemberIdRequired => 79,
            ErrorCode::GroupMaxSizeReached => 81,
            ErrorCode::FencedInstanceId => 82,
            ErrorCode::GroupSubscribedToTopic => 86,
        }
    }

    /// True for [`ErrorCode::None`].
    pub const fn is_ok(self) -> bool {
        matches!(self, ErrorCode::None)
    }

    /// Every variant, for exhaustive tests.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::None,
        ErrorCode::UnknownServerError,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::IllegalGeneration,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::InvalidCommitOffsetSize,
        ErrorCode::NonEmptyGroup,
        ErrorCode::GroupIdNotFound,
        ErrorCode::MemberIdRequired,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::GroupSubscribedToTopic,
    ];
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;
    use kafka_protocol::ResponseError as R;

    #[test]
    fn codes_match_kafka_protocol() {
        let expected = [
            (ErrorCode::UnknownServerError, R::UnknownServerError),
            (ErrorCode::OffsetMetadataTooLarge, R::OffsetMetadataTooLarge),
            (
                ErrorCode::CoordinatorLoadInProgress,
                R::CoordinatorLoadInProgress,
            ),
            (
                ErrorCode::CoordinatorNotAvailable,
                R::CoordinatorNotAvailable,
            ),
            (ErrorCode::NotCoordinator, R::NotCoordinator),
            (ErrorCode::IllegalGeneration, R::IllegalGeneration),
            (
                ErrorCode::InconsistentGroupProtocol,
                R::InconsistentGroupProtocol,
            ),
            (ErrorCode::InvalidGroupId, R::InvalidGroupId),
            (ErrorCode::UnknownMemberId, R::UnknownMemberId),
            (ErrorCode::InvalidSessionTimeout, R::InvalidSessionTimeout),
            (ErrorCode::RebalanceInProgress, R::RebalanceInProgress),
            (
                ErrorCode::InvalidCommitOffsetSize,
                R::InvalidCommitOffsetSize,
            ),
            (ErrorCode::NonEmptyGroup, R::NonEmptyGroup),
            (ErrorCode::GroupIdNotFound, R::GroupIdNotFound),
            (ErrorCode::MemberIdRequired, R::MemberIdRequired),
            (ErrorCode::GroupMaxSizeReached, R::GroupMaxSizeReached),
            (ErrorCode::FencedInstanceId, R::FencedInstanceId),
            (ErrorCode::GroupSubscribedToTopic, R::GroupSubscribedToTopic),
        ];
        assert_eq!(expected.len() + 1, ErrorCode::ALL.len());
        assert_eq!(ErrorCode::None.code(), 0);
        for (ours, theirs) in expected {
            assert_eq!(ours.code(), theirs.code(), "{ours:?}");
        }
        let mut codes: Vec<i16> = ErrorCode::ALL.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorCode::ALL.len(), "wire codes are unique");
    }
}
