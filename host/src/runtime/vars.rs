//! The `wasi:config/store` import: the app's variables and secrets.
//!
//! Rule: a variable is read with [`Capability::ConfigRead`]; a secret's
//! value additionally needs [`Capability::SecretRead`] (of the principal
//! the script runs as and of its deployer, like every host call) and is
//! opened with the host's key only here, on its way into the guest. A
//! secret that does not open says which key is wrong, never what it holds.
//! Each call is charged to the invocation's host-call budget, and the
//! answer's bytes to its byte budget.

use super::host::{Call, HostError, State, wasi::config::store as wit};
use crate::auth::Capability;
use crate::secrets::SecretError;
use crate::store::{self, StoredVar};

impl Call {
    /// The value of a stored variable: its text, or its secret opened.
    async fn var_value(&self, var: StoredVar) -> Result<String, wit::Error> {
        if !var.secret {
            return Ok(String::from_utf8_lossy(&var.value).into_owned());
        }
        self.check(Capability::SecretRead(self.app_id()))
            .await
            .map_err(config_error)?;
        let key = self
            .secret_key()
            .ok_or_else(|| wit::Error::Upstream(SecretError::NoKey.to_string()))?;
        key.open(self.app_id(), &var.name, &var.value)
            .map_err(|e| wit::Error::Upstream(e.to_string()))
    }
}

/// What a guest is told when a host call of this interface fails.
fn config_error(e: HostError) -> wit::Error {
    match e {
        HostError::PermissionDenied => wit::Error::Upstream(
            "permission denied: the script's principal may not read this variable".into(),
        ),
        HostError::Unavailable(why) => wit::Error::Io(why),
        HostError::NotFound(m) | HostError::InvalidArgument(m) | HostError::Conflict(m) => {
            wit::Error::Upstream(m)
        }
    }
}

impl wit::Host for State {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, wit::Error>> {
        self.budget.call()?;
        let this = self.call();
        let answer = async move {
            // A name no variable can have is simply absent.
            if store::validate_var_name(&key).is_err() {
                return Ok(None);
            }
            let app = this.app_id();
            this.check(Capability::ConfigRead(app))
                .await
                .map_err(config_error)?;
            let var = this
                .storage(this.store().get_var(app, &key))
                .await
                .map_err(config_error)?;
            match var {
                None => Ok(None),
                Some(var) => this.var_value(var).await.map(Some),
            }
        }
        .await;
        if let Ok(Some(value)) = &answer {
            self.budget.read(value.len())?;
        }
        Ok(answer)
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, wit::Error>> {
        self.budget.call()?;
        let this = self.call();
        let answer = async move {
            let app = this.app_id();
            this.check(Capability::ConfigRead(app))
                .await
                .map_err(config_error)?;
            let vars = this
                .storage(this.store().list_vars(app))
                .await
                .map_err(config_error)?;
            let mut all = Vec::with_capacity(vars.len());
            for var in vars {
                let name = var.name.clone();
                all.push((name, this.var_value(var).await?));
            }
            Ok(all)
        }
        .await;
        if let Ok(all) = &answer {
            self.budget
                .read(all.iter().map(|(k, v)| k.len() + v.len()).sum())?;
        }
        Ok(answer)
    }
}
