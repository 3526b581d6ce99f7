//! Administration of trust: signing keys, OAuth client registrations, roles and access groups,
//! operators, the audit log.

use super::*;

impl Client {
    // ---- environments' variables ----

    pub async fn variables(&self, environment: &str) -> Result<Vec<drover_types::Variable>> {
        self.get(&format!("/api/v1/environments/{environment}/variables")).await
    }
    pub async fn set_variable(
        &self,
        environment: &str,
        name: &str,
        v: &drover_types::SetVariable,
    ) -> Result<drover_types::Variable> {
        self.put(&format!("/api/v1/environments/{environment}/variables/{name}"), v).await
    }
    pub async fn delete_variable(&self, environment: &str, name: &str) -> Result<()> {
        self.delete(&format!("/api/v1/environments/{environment}/variables/{name}")).await
    }

    // ---- signing keys ----

    pub async fn keys(&self) -> Result<Vec<drover_types::SigningKey>> {
        self.get("/api/v1/keys").await
    }
    /// A new active key of the current key's algorithm.
    pub async fn rotate_key(&self) -> Result<serde_json::Value> {
        self.rotate_key_to(None).await
    }
    /// A new active key; `alg` `None` keeps the current key's algorithm.
    pub async fn rotate_key_to(&self, alg: Option<&str>) -> Result<serde_json::Value> {
        self.post("/api/v1/keys/rotate", &serde_json::json!({ "alg": alg })).await
    }
    pub async fn import_key(&self, pkcs8_der: &[u8], alg: Option<&str>, activate: bool) -> Result<serde_json::Value> {
        self.import_key_with_certificates(pkcs8_der, &[], alg, activate).await
    }
    /// Imports a key with the certificates its keystore entry holds (DER); the orchestrator
    /// keeps the one for this key and lists its subject and expiry with the key.
    pub async fn import_key_with_certificates(
        &self,
        pkcs8_der: &[u8],
        certificates_der: &[&[u8]],
        alg: Option<&str>,
        activate: bool,
    ) -> Result<serde_json::Value> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = drover_types::KeyImport {
            pkcs8_base64: b64.encode(pkcs8_der),
            activate,
            alg: alg.map(String::from),
            certificates_der_base64: certificates_der.iter().map(|d| b64.encode(d)).collect(),
        };
        self.post("/api/v1/keys/import", &body).await
    }

    // ---- OAuth clients ----

    pub async fn clients(&self) -> Result<Vec<drover_types::Client>> {
        self.get("/api/v1/clients").await
    }
    pub async fn client_registration(&self, name: &str) -> Result<drover_types::Client> {
        self.get(&format!("/api/v1/clients/{name}")).await
    }
    /// A confidential client with a secret and these roles.
    pub async fn create_client(&self, name: &str, roles: &[String]) -> Result<drover_types::ClientSecret> {
        self.register_client(&drover_types::NewClient {
            name: name.into(),
            roles: roles.to_vec(),
            ..Default::default()
        })
        .await
    }
    pub async fn register_client(&self, n: &drover_types::NewClient) -> Result<drover_types::ClientSecret> {
        self.post("/api/v1/clients", n).await
    }
    pub async fn update_client(&self, name: &str, u: &drover_types::ClientUpdate) -> Result<drover_types::Client> {
        self.send(self.req(Method::PUT, &format!("/api/v1/clients/{name}")).json(u).timeout(Duration::from_secs(60)))
            .await
    }
    pub async fn delete_client(&self, name: &str) -> Result<()> {
        self.delete(&format!("/api/v1/clients/{name}")).await
    }
    pub async fn regenerate_client_secret(&self, name: &str, grace: Duration) -> Result<drover_types::ClientSecret> {
        self.post(
            &format!("/api/v1/clients/{name}/regenerate-secret"),
            &drover_types::RegenerateSecret { grace_secs: grace.as_secs() },
        )
        .await
    }
    pub async fn revoke_client_tokens(&self, name: &str) -> Result<drover_types::Client> {
        self.post(&format!("/api/v1/clients/{name}/revoke-tokens"), &serde_json::json!({})).await
    }

    // ---- roles and access groups ----

    pub async fn roles(&self) -> Result<Vec<drover_types::Role>> {
        self.get("/api/v1/roles").await
    }
    pub async fn create_role(&self, r: &drover_types::Role) -> Result<drover_types::Role> {
        self.post("/api/v1/roles", r).await
    }
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        self.delete(&format!("/api/v1/roles/{name}")).await
    }
    pub async fn access_groups(&self) -> Result<Vec<drover_types::AccessGroup>> {
        self.get("/api/v1/access-groups").await
    }
    pub async fn create_access_group(&self, g: &drover_types::AccessGroup) -> Result<drover_types::AccessGroup> {
        self.post("/api/v1/access-groups", g).await
    }
    pub async fn put_access_group(&self, g: &drover_types::AccessGroup) -> Result<drover_types::AccessGroup> {
        self.send(
            self.req(Method::PUT, &format!("/api/v1/access-groups/{}", g.name))
                .json(g)
                .timeout(Duration::from_secs(60)),
        )
        .await
    }
    pub async fn delete_access_group(&self, name: &str) -> Result<()> {
        self.delete(&format!("/api/v1/access-groups/{name}")).await
    }

    // ---- operators ----

    pub async fn revoke_operator_sessions(&self, name: &str) -> Result<()> {
        let rb = self
            .req(Method::POST, &format!("/api/v1/operators/{name}/revoke-sessions"))
            .timeout(Duration::from_secs(60));
        Self::check(self.dispatch(rb).await?).await?;
        Ok(())
    }

    pub async fn operators(&self) -> Result<Vec<drover_types::Operator>> {
        self.get("/api/v1/operators").await
    }
    pub async fn add_operator(&self, op: &drover_types::NewOperator) -> Result<drover_types::OperatorCreated> {
        self.post("/api/v1/operators", op).await
    }
    pub async fn update_operator(
        &self,
        name: &str,
        u: &drover_types::OperatorUpdate,
    ) -> Result<drover_types::Operator> {
        self.send(self.req(Method::PUT, &format!("/api/v1/operators/{name}")).json(u).timeout(Duration::from_secs(60)))
            .await
    }
    pub async fn unlock_operator(&self, name: &str) -> Result<drover_types::Operator> {
        self.post(&format!("/api/v1/operators/{name}/unlock"), &serde_json::json!({})).await
    }
    pub async fn set_operator_password(&self, name: &str, password: &str) -> Result<()> {
        let rb = self
            .req(Method::POST, &format!("/api/v1/operators/{name}/password"))
            .json(&drover_types::PasswordChange { password: password.to_string() })
            .timeout(Duration::from_secs(60));
        Self::check(self.dispatch(rb).await?).await?;
        Ok(())
    }

    /// The audit log, newest first, with optional filters.
    pub async fn audit(
        &self,
        principal: Option<&str>,
        action: Option<&str>,
        outcome: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<drover_types::audit::AuditEntry>> {
        let mut rb = self.req(Method::GET, "/api/v1/audit").timeout(Duration::from_secs(60));
        let mut q: Vec<(&str, String)> = Vec::new();
        for (k, v) in [("principal", principal), ("action", action), ("outcome", outcome)] {
            if let Some(v) = v {
                q.push((k, v.to_string()));
            }
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        rb = rb.query(&q);
        self.send(rb).await
    }

    /// Verifies the audit log's hash chain on the orchestrator.
    /// A SysOps view: `nodes`, `caches`, `pools` or `queues`.
    pub async fn system(&self, what: &str) -> Result<serde_json::Value> {
        self.get(&format!("/api/v1/system/{what}")).await
    }
    pub async fn clear_cache(&self, name: &str) -> Result<serde_json::Value> {
        self.post(&format!("/api/v1/system/caches/{name}/clear"), &serde_json::json!({})).await
    }
    /// Drains a node (`on`) or ends its drain.
    pub async fn drain_node(&self, node: &str, on: bool) -> Result<serde_json::Value> {
        let what = if on { "drain" } else { "resume" };
        self.post(&format!("/api/v1/system/nodes/{node}/{what}"), &serde_json::json!({})).await
    }
    pub async fn resize_pool(&self, max: u32) -> Result<serde_json::Value> {
        self.send(
            self.req(Method::PUT, "/api/v1/system/pools/database")
                .json(&serde_json::json!({"max_connections": max}))
                .timeout(Duration::from_secs(60)),
        )
        .await
    }

    pub async fn verify_audit(&self) -> Result<drover_types::audit::AuditVerification> {
        self.send(self.req(Method::GET, "/api/v1/audit/verify").timeout(Duration::from_secs(600))).await
    }
}
