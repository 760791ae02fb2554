//! One connected client per registry for the whole run, so pings, credential lookups and
//! tokens are not repeated for every blob.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{ClientOptions, RegistryClient, RegistryError};
use crate::reference::Registry;

pub struct Clients {
    options: ClientOptions,
    connected: Mutex<HashMap<String, Arc<RegistryClient>>>,
}

impl Clients {
    pub fn new(options: ClientOptions) -> Clients {
        Clients {
            options,
            connected: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `registry`, connecting on first use.
    pub async fn get(&self, registry: &Registry) -> Result<Arc<RegistryClient>, RegistryError> {
        let key = format!("{:?}", (registry.api_authority(), registry.scheme()));
        let mut connected = self.connected.lock().await;
        if let Some(c) = connected.get(&key) {
            return Ok(c.clone());
        }
        let client = RegistryClient::connect(registry, &self.options).await?;
        connected.insert(key, client.clone());
        Ok(client)
    }
}
