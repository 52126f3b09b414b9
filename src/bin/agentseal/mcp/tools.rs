//! The tools, one method each: parse typed parameters, run one core operation off the async
//! runtime, shape the result.

use super::*;

#[tool_router]
impl AgentServer {
    /// A server acting as `agent_id` of `installation`.
    pub fn new(installation: Arc<Installation>, agent_id: &str) -> Self {
        AgentServer {
            installation,
            agent_id: Some(agent_id.into()),
            trust: None,
            crl_validity: None,
            approvals: approvals(),
            approval_ttl: agentseal::authority::DEFAULT_APPROVAL_TTL,
            tool_router: Self::tool_router(),
        }
    }

    /// Also verifies peers certified by the CA of the hub `trust` fetches from.
    pub fn trusting(mut self, trust: Option<Arc<HubTrust>>) -> Self {
        self.trust = trust;
        self
    }

    /// Publishes revocation lists valid for `validity` seconds.
    pub fn with_crl_validity(mut self, validity: Option<i64>) -> Self {
        self.crl_validity = validity;
        self
    }

    /// Lets out-of-band approvals wait `ttl` seconds for a person (default 15 minutes).
    pub fn with_approval_ttl(mut self, ttl: Option<i64>) -> Self {
        if let Some(ttl) = ttl {
            self.approval_ttl = ttl;
        }
        self
    }

    /// The other hub's current snapshot, refreshed when due, if `certificate` (or, with no
    /// certificate, a whole token) may come from another CA: evidence of this installation's
    /// own agents never waits for the other hub.
    pub(super) async fn hub_snapshot(
        &self,
        certificate: Option<&str>,
        token: Option<&str>,
    ) -> Option<Arc<HubSnapshot>> {
        let trust = self.trust.as_ref()?;
        let foreign = match certificate {
            Some(certificate) => {
                agentseal::token::certificate::AgentCertificate::parse_unverified(certificate)
                    .is_ok_and(|(_, claims, _)| {
                        claims.iss != self.installation.trust_anchor().ca_id
                    })
            }
            None => token.is_some_and(|t| agentseal::token::action::parse_unverified(t).is_ok()),
        };
        if foreign { trust.current().await } else { None }
    }

    /// A server acting, for each request, as the agent of the request's verified
    /// [`AccessGrant`] (put in the HTTP request's extensions by the hub's authorization layer).
    pub fn per_request(installation: Arc<Installation>) -> Self {
        AgentServer {
            installation,
            agent_id: None,
            trust: None,
            crl_validity: None,
            approvals: approvals(),
            approval_ttl: agentseal::authority::DEFAULT_APPROVAL_TTL,
            tool_router: Self::tool_router(),
        }
    }

    pub(super) fn caller(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<Arc<str>, McpError> {
        if let Some(agent) = &self.agent_id {
            return Ok(agent.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<AccessGrant>())
            .map(|grant| Arc::from(grant.agent_id.as_str()))
            .ok_or_else(|| McpError::invalid_request("no authorized agent for this request", None))
    }

    /// Tells you who you are: your agent id, the CA that certified you, your certificate's serial
    /// and validity, your signature algorithms and key ids. Call it first, or whenever you need
    /// to state your identity. Never returns key material.
    #[tool(annotations(
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn whoami(&self, Caller(agent): Caller) -> Result<Json<WhoAmI>, McpError> {
        let installation = self.installation.clone();
        blocking(move || {
            let record = installation.agent(&agent)?;
            let encoded = installation.certificate(&agent)?;
            let (_, claims, keys) =
                agentseal::token::certificate::AgentCertificate::parse_unverified(&encoded)
                    .map_err(|e| ServiceError::InvalidInput(e.to_string()))?;
            Ok(Json(WhoAmI {
                agent_id: agent.to_string(),
                ca_id: installation.trust_anchor().ca_id.clone(),
                certificate_serial: claims.jti,
                certificate_not_before: claims.nbf,
                certificate_expires_at: claims.exp,
                certificate_renews_at: installation.renewal_due_at(claims.iat, claims.exp),
                algorithms: record.algorithms,
                key_ids: keys.iter().map(agentseal::jose::thumbprint).collect(),
                meta: claims.meta,
            }))
        })
        .await
    }

    /// Signs a short-lived action token that authorizes ONE action, for ONE audience, with
    /// EXACTLY the given arguments. Call it right before asking another agent or service to do
    /// something on your behalf, and send the token along; the receiver verifies it offline.
    /// Never reuse a token for another action or other arguments. The installation's policy may
    /// refuse, shorten the lifetime, limit how often you sign, or ask a person to approve first:
    /// a refusal is an error result whose `reasons` say why.
    #[tool(
        input_schema = input_schema::<SignActionParams>(),
        output_schema = rmcp::handler::server::tool::schema_for_output::<SignedToken>(),
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn sign_action(
        &self,
        Caller(agent): Caller,
        context: RequestContext<RoleServer>,
        RequestState(state): RequestState,
        InputAnswers(answers): InputAnswers,
        Args(p): Args<SignActionParams>,
    ) -> Result<CallToolResponse, McpError> {
        let installation = self.installation.clone();
        let mut request = ActionRequest::new(
            p.action,
            p.audience,
            Value::Object(p.arguments.unwrap_or_default()),
        );
        if let Some(ttl) = p.ttl_seconds {
            request.ttl = ttl;
        }
        request.scope = p.scope;
        let on_behalf_of = p.on_behalf_of;
        let sign = |approval: Approval| {
            let (installation, agent, request, on_behalf_of) = (
                installation.clone(),
                agent.clone(),
                request.clone(),
                on_behalf_of.clone(),
            );
            async move {
                crate::core_call(move || {
                    installation.sign_action_for(
                        &agent,
                        &request,
                        on_behalf_of.as_deref(),
                        approval,
                    )
                })
                .await
                .map_err(|e| McpError::internal_error(e.to_string(), None))
            }
        };
        let mut signed = sign(Approval::NotGiven).await?;
        if let Err(ServiceError::ApprovalRequired(_)) = &signed {
            let wanted = ApprovalRequest::new(&agent, &request, on_behalf_of.as_deref());
            // The agent comes back with the id of an approval a person gave out of band.
            if let Some(id) = p.approval_id {
                let (installation, wanted, taken_id) =
                    (installation.clone(), wanted.clone(), id.clone());
                let taken = crate::core_call(move || installation.use_approval(&taken_id, &wanted))
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                signed = match taken {
                    Ok(()) => {
                        let signed = sign(Approval::Given).await?;
                        if signed.is_err() {
                            let installation = self.installation.clone();
                            blocking(move || installation.give_back_approval(&id)).await?;
                        }
                        signed
                    }
                    Err(ServiceError::Approval(ApprovalError::Pending { id, expires_at })) => {
                        return Ok(still_pending(&id, expires_at).into());
                    }
                    Err(ServiceError::Approval(error)) => {
                        return Ok(refused(vec![error.code().to_owned()], error.to_string()).into());
                    }
                    Err(error) => Err(error),
                };
            } else if !approval::client_can_ask(&context) {
                // Nobody at this client to ask: a person decides out of band.
                let (installation, ttl) = (installation.clone(), self.approval_ttl);
                let held = crate::core_call(move || installation.request_approval(wanted, ttl))
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                return match held {
                    Ok(pending) => Ok(still_pending(&pending.id, pending.expires_at).into()),
                    Err(ServiceError::Approval(error)) => {
                        Ok(refused(vec![error.code().to_owned()], error.to_string()).into())
                    }
                    Err(error) => Err(to_mcp_error(error)),
                };
            } else {
                // Signalled when first asked, not again when the answer comes back (2026-07-28).
                if answers.is_none() {
                    let (installation, agent, request, on_behalf_of) = (
                        installation.clone(),
                        agent.clone(),
                        request.clone(),
                        on_behalf_of.clone(),
                    );
                    blocking(move || {
                        installation.approval_requested(&agent, &request, on_behalf_of.as_deref());
                        Ok(())
                    })
                    .await?;
                }
                // Ask the person in this task: the client's answer comes back on this request's
                // stream. Nothing was signed or counted yet.
                signed = match self.approvals.ask(&context, state, answers, wanted).await? {
                    approval::Answer::Approved => sign(Approval::Given).await?,
                    approval::Answer::Ask(input) => {
                        return Ok(CallToolResponse::InputRequired(input));
                    }
                    approval::Answer::Refused(code, message) => {
                        return Ok(refused(vec![code.to_owned()], message).into());
                    }
                };
            }
        }
        match signed {
            Ok(signed) => Json(SignedToken {
                token: signed.token,
                token_id: signed.jti,
                expires_at: signed.exp,
            })
            .into_call_tool_result(),
            Err(error) => refusal(error).map(CallToolResponse::from),
        }
    }

    /// Lets another agent act for you (or pass on what you may do for someone): it may then
    /// call sign_action with on_behalf_of set to you, for the actions, audiences and time you
    /// grant here, never more than you hold yourself. Grant the least it needs; revoke the grant
    /// when the work is done.
    #[tool(input_schema = input_schema::<DelegateParams>(), annotations(
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn delegate(
        &self,
        Caller(agent): Caller,
        Args(p): Args<DelegateParams>,
    ) -> Result<Json<IssuedGrant>, McpError> {
        let installation = self.installation.clone();
        let request = GrantRequest {
            delegate: p.delegate,
            actions: p.actions,
            audiences: p.audiences,
            scope: p.scope,
            ttl: p.ttl_seconds.unwrap_or(3_600),
        };
        blocking(move || {
            Ok(Json(installation.delegate(
                &agent,
                &request,
                p.on_behalf_of.as_deref(),
            )?))
        })
        .await
    }

    /// Presents your certificate so a peer can check who you are. If the peer gave you a
    /// challenge, pass it with the peer's id as `audience`: the result then includes a proof
    /// that you hold the certified keys (a certificate alone proves nothing). Send both back.
    #[tool(input_schema = input_schema::<PresentParams>(), annotations(
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn present_certificate(
        &self,
        Caller(agent): Caller,
        Args(p): Args<PresentParams>,
    ) -> Result<Json<Presentation>, McpError> {
        if p.challenge.is_some() && p.audience.is_none() {
            return Err(McpError::invalid_params(
                "a challenge needs the peer's id as `audience`",
                None,
            ));
        }
        let installation = self.installation.clone();
        blocking(move || {
            let audience = p.audience.unwrap_or_default();
            Ok(Json(installation.present_certificate(
                &agent,
                p.challenge.as_deref(),
                &audience,
            )?))
        })
        .await
    }

    /// Creates a fresh, single-use challenge (valid 5 minutes) to send to a peer whose identity
    /// you want proven. The peer answers with `present_certificate` using it; pass the answer to
    /// `verify_peer`. Always use a new challenge: never invent one or reuse one.
    #[tool(annotations(
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn new_challenge(&self, Caller(agent): Caller) -> Result<Json<NewChallenge>, McpError> {
        let installation = self.installation.clone();
        blocking(move || {
            let (challenge, expires_at) = installation.issue_challenge(&agent)?;
            Ok(Json(NewChallenge {
                challenge,
                expires_at,
            }))
        })
        .await
    }

    /// Verifies what another agent sent you, offline: an action token (with the action and
    /// arguments you are about to use), a certificate with its proof of possession over a
    /// challenge from your `new_challenge`, or both. Tokens and proofs must be addressed to you;
    /// a certificate alone proves nothing. Call it before acting on a peer's request. A failed check is a normal answer: `valid: false` with reason codes (expired,
    /// revoked, bad_signature, wrong_audience, args_mismatch, malformed, ...). Act only on
    /// `valid: true`.
    // Not read-only nor idempotent: a verified proof consumes its challenge.
    #[tool(input_schema = input_schema::<VerifyPeerParams>(), annotations(
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn verify_peer(
        &self,
        Caller(agent): Caller,
        Args(p): Args<VerifyPeerParams>,
    ) -> Result<Json<PeerVerdict>, McpError> {
        let installation = self.installation.clone();
        let evidence = PeerEvidence {
            token: p.token,
            certificate: p.certificate,
            proof: p.proof,
            challenge: p.challenge,
            audience: agent.to_string(),
            action: p.expected_action,
            args: p.arguments.map(Value::Object),
            consume: p.consume,
            allow_unissued_challenge: false,
        };
        let snapshot = self
            .hub_snapshot(evidence.certificate.as_deref(), None)
            .await;
        blocking(move || {
            let trust = snapshot.as_deref().map(HubSnapshot::trust);
            Ok(Json(installation.verify_peer_trusting(&evidence, trust)?))
        })
        .await
    }

    /// Checks whether a token or certificate has been revoked, and how fresh that answer is.
    /// Give exactly one of `token`, `token_id`, `certificate`, `serial` (serial or agent id).
    #[tool(input_schema = input_schema::<CheckRevocationParams>(), annotations(
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn check_revocation(
        &self,
        Args(p): Args<CheckRevocationParams>,
    ) -> Result<Json<RevocationResult>, McpError> {
        one_of(&[
            ("token", p.token.is_some()),
            ("token_id", p.token_id.is_some()),
            ("certificate", p.certificate.is_some()),
            ("serial", p.serial.is_some()),
        ])?;
        let installation = self.installation.clone();
        let snapshot = self
            .hub_snapshot(p.certificate.as_deref(), p.token.as_deref())
            .await;
        blocking(move || {
            let (kind, subject) = match (p.token.or(p.token_id), p.certificate.or(p.serial)) {
                (Some(token), _) => (RevokedKind::Token, token),
                (None, Some(cert)) => (RevokedKind::Certificate, cert),
                (None, None) => unreachable!("one_of checked"),
            };
            let trust = snapshot.as_deref().map(HubSnapshot::trust);
            Ok(Json(
                installation
                    .check_revocation_trusting(kind, &subject, trust)?
                    .into(),
            ))
        })
        .await
    }

    /// Revokes a token or delegation grant you signed (for example one that leaked, or a
    /// delegation whose work is done: everything under it stops verifying), or your own
    /// certificate if your keys may be compromised. Irreversible: a revoked certificate stops you signing
    /// anything until the operator gives you a new identity. You cannot revoke other agents'
    /// tokens or certificates.
    #[tool(input_schema = input_schema::<RevokeParams>(), annotations(
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn revoke(
        &self,
        Caller(agent): Caller,
        Args(p): Args<RevokeParams>,
    ) -> Result<Json<RevokeResult>, McpError> {
        one_of(&[
            ("token", p.token.is_some()),
            ("certificate_serial", p.certificate_serial.is_some()),
            ("own_certificate", p.own_certificate),
        ])?;
        let installation = self.installation.clone();
        blocking(move || {
            if let Some(token) = p.token {
                let entry = installation.revoke_own_token(&agent, &token, &p.reason)?;
                return Ok(Json(revoke_result(RevokedKind::Token, vec![entry])));
            }
            let entries = installation.revoke_own_certificate(
                &agent,
                p.certificate_serial.as_deref(),
                &p.reason,
            )?;
            Ok(Json(revoke_result(RevokedKind::Certificate, entries)))
        })
        .await
    }
}
