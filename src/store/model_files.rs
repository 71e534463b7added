//! STUB
use super::StoreError;
use std::path::Path;
pub struct ModelFiles;
impl ModelFiles {
    pub fn open(_d: &Path, _k: usize) -> Result<Self, StoreError> {
        Ok(ModelFiles)
    }
    pub fn save(&self, _v: u64, _b: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    pub fn set_active(&self, _v: u64) -> Result<(), StoreError> {
        Ok(())
    }
    pub fn active(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    pub fn versions(&self) -> Result<Vec<u64>, StoreError> {
        Ok(vec![])
    }
    pub fn read(&self, _v: u64) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Other("x".into()))
    }
    pub fn next_version(&self) -> Result<u64, StoreError> {
        Ok(1)
    }
    pub fn quarantine(&self, _v: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
