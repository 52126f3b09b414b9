//! The audit log as the authority keeps it: appending events, releasing results only once they
//! are recorded, and reading and verifying records.

use super::*;

/// Why [`Installation::release`] did not hand a result over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Withheld<E> {
    /// The operation itself failed: its error, passed on whether or not the failure was recorded
    /// (an error carries nothing that must not leave unaudited).
    #[error(transparent)]
    Failed(E),
    /// The operation succeeded but its audit record could not be appended, so its result (a
    /// token, a revocation report, ...) is withheld.
    #[error(
        "the operation was done but the audit log could not record it ({0}); its result is withheld"
    )]
    Unaudited(ServiceError),
}

impl From<Withheld<ServiceError>> for ServiceError {
    fn from(withheld: Withheld<ServiceError>) -> Self {
        match withheld {
            Withheld::Failed(error) => error,
            Withheld::Unaudited(error) => ServiceError::Unaudited(Box::new(error)),
        }
    }
}

impl Installation {
    /// The one rule every front-end follows before answering: appends `event` (which describes
    /// `outcome`) to the audit log, then releases `outcome`. A success that cannot be recorded
    /// is withheld as [`Withheld::Unaudited`]: no unaudited token or decision leaves the
    /// installation. A failure is passed on either way; a failure to record it is logged.
    pub fn release<T, E>(
        &self,
        event: &AuditEvent,
        outcome: Result<T, E>,
    ) -> Result<T, Withheld<E>> {
        match (self.audit(event), outcome) {
            (Ok(_), outcome) => outcome.map_err(Withheld::Failed),
            (Err(error), Ok(_)) => {
                tracing::error!(%error, operation = %event.operation, "audit log append failed; result withheld");
                Err(Withheld::Unaudited(error))
            }
            (Err(error), Err(original)) => {
                tracing::warn!(%error, operation = %event.operation, "the audit log could not record this failure");
                Err(Withheld::Failed(original))
            }
        }
    }

    /// Appends `event` to the audit log, signed by the CA's first key: in the database (safe from a
    /// killed process) before returning, on disk within [`crate::store::FLUSH_INTERVAL`].
    pub fn audit(&self, event: &AuditEvent) -> Result<SealedRecord, ServiceError> {
        let ca = self.signers("ca", &self.anchor.keys, |alg| {
            KeyName::ca(&self.install_id, alg)
        })?;
        let now = clock::now();
        let event = event.clone();
        self.store
            .append_audit(&event.actor.clone(), move |previous| {
                Ok::<_, ServiceError>(audit::seal(&event, previous, now, &ca[0])?)
            })
    }

    /// Verifies the whole audit log against the CA's keys and the head the last append
    /// recorded, or `head` if given (one kept aside, so that rolling back the database with its
    /// recorded head is found too). `Ok(Err(fault))` names the first bad record.
    pub fn verify_audit(
        &self,
        head: Option<AuditHead>,
    ) -> Result<Result<AuditSummary, AuditFault>, ServiceError> {
        let head = match head {
            Some(head) => Some(head),
            None => self.store.audit_head()?,
        };
        let mut verifier = AuditVerifier::new(&self.anchor.keys, head.as_ref());
        let mut fault = None;
        self.store
            .audit_records(1, &mut |record| match verifier.push(&record) {
                Ok(()) => true,
                Err(e) => {
                    fault = Some(e);
                    false
                }
            })?;
        Ok(match fault {
            Some(fault) => Err(fault),
            None => verifier.finish(),
        })
    }

    /// Visits the audit records from position `from` on, as stored (verify before trusting).
    pub fn audit_records(
        &self,
        from: i64,
        visit: &mut dyn FnMut(SealedRecord) -> bool,
    ) -> Result<(), ServiceError> {
        Ok(self.store.audit_records(from, visit)?)
    }

    /// The `limit` most recent audit records about `actor`, newest first, as signed.
    pub fn recent_audit(
        &self,
        actor: &str,
        limit: i64,
    ) -> Result<Vec<(i64, RecordBody)>, ServiceError> {
        Ok(self
            .store
            .audit_recent(actor, limit)?
            .into_iter()
            .filter_map(|record| {
                let body = record.parsed().ok()?;
                (body.actor == actor).then_some((record.seq, body))
            })
            .collect())
    }
}
