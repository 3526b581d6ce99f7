//! Operators: creation, roles, disable/enable, password change and lockout, on both backends.

use drover_testkit::{Backend, TestServer};
use drover_types::{NewOperator, OperatorUpdate};

drover_testkit::on_both_backends!(operators_are_managed_and_locked_out);

async fn operators_are_managed_and_locked_out(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let created = admin
        .add_operator(&NewOperator {
            name: "ann".into(),
            email: Some("ann@example.com".into()),
            roles: vec!["viewer".into()],
            password: None,
        })
        .await?;
    let pw = created.password.clone().expect("a generated password is returned once");
    assert!(pw.len() == 64 && pw.bytes().all(|b| b.is_ascii_hexdigit()));
    let ann = s.client("ann", &pw);
    ann.pipelines().await?;
    assert_eq!(ann.deploy("x", "1").await.unwrap_err().status(), Some(403));
    // Role changes apply at the next call.
    admin
        .update_operator("ann", &OperatorUpdate { roles: Some(vec!["deployer".into()]), ..Default::default() })
        .await?;
    assert_eq!(
        ann.deploy("x", "1").await.unwrap_err().status(),
        Some(404),
        "now allowed (the pipeline does not exist)"
    );

    // Bad input is refused clearly.
    let bad = |roles: Vec<&str>, password: Option<&str>| NewOperator {
        name: "bob".into(),
        email: None,
        roles: roles.into_iter().map(String::from).collect(),
        password: password.map(String::from),
    };
    assert_eq!(admin.add_operator(&bad(vec!["wizard"], None)).await.unwrap_err().status(), Some(400));
    assert_eq!(admin.add_operator(&bad(vec!["agent"], None)).await.unwrap_err().status(), Some(400));
    assert_eq!(admin.add_operator(&bad(vec!["viewer"], Some("short"))).await.unwrap_err().status(), Some(400));
    assert_eq!(
        admin
            .add_operator(&NewOperator { name: "ann".into(), roles: vec!["viewer".into()], ..Default::default() })
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
    assert_eq!(ann.operators().await.unwrap_err().status(), Some(403), "operator.manage is needed");

    // Five wrong passwords lock the account; then even the right one is refused.
    for _ in 0..5 {
        assert_eq!(s.client("ann", "not-the-password").pipelines().await.unwrap_err().status(), Some(401));
    }
    assert_eq!(ann.pipelines().await.unwrap_err().status(), Some(401), "locked out");
    let listed = admin.operators().await?;
    let a = listed.iter().find(|o| o.name == "ann").unwrap();
    assert!(a.locked_until.is_some());
    assert_eq!(a.failed_logins, 5);
    let audit = admin.audit(None, Some("operator.locked"), None, None).await?;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].entry.target, "ann");
    let refused = admin.audit(None, Some("auth.failed"), None, None).await?;
    assert_eq!(refused[0].entry.detail["reason"], "locked");
    admin.unlock_operator("ann").await?;
    ann.pipelines().await?;

    // A new password replaces the old one at once (no stale remembered login).
    admin.set_operator_password("ann", "a-brand-new-password").await?;
    assert_eq!(ann.pipelines().await.unwrap_err().status(), Some(401));
    let ann2 = s.client("ann", "a-brand-new-password");
    ann2.pipelines().await?;

    // Disabled operators are refused; enabled again, they are back.
    admin.update_operator("ann", &OperatorUpdate { disabled: Some(true), ..Default::default() }).await?;
    assert_eq!(ann2.pipelines().await.unwrap_err().status(), Some(401));
    admin.update_operator("ann", &OperatorUpdate { disabled: Some(false), ..Default::default() }).await?;
    ann2.pipelines().await?;
    assert_eq!(
        admin
            .update_operator("admin", &OperatorUpdate { disabled: Some(true), ..Default::default() })
            .await
            .unwrap_err()
            .status(),
        Some(409),
        "no locking yourself out"
    );
    // Names are unique across operators and agents.
    assert_eq!(admin.add_agent("ann", "dev").await.unwrap_err().status(), Some(409));
    s.shutdown().await;
    Ok(())
}
