//! Host-local address management: addresses of a subnet handed out to owners (a pod, a VM),
//! one file per address in a directory, under a lock — the layout of CNI's host-local plugin,
//! so allocations survive restarts and two processes never hand out the same address.

use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Ipv4Cidr, Result};

pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Cidr,
}

impl Ipam {
    /// Allocations for `subnet` kept in `dir` (created if missing). The subnet's first host
    /// address is the gateway and never handed out.
    pub fn new(dir: &Path, subnet: Ipv4Cidr) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::Io(format!("creating {}", dir.display()), e))?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            subnet: Ipv4Cidr::new(subnet.network(), subnet.prefix)?,
        })
    }

    /// The gateway address: the subnet's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.nth(1).unwrap_or(self.subnet.network())
    }

    pub fn subnet(&self) -> Ipv4Cidr {
        self.subnet
    }

    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("opening {}", path.display()), e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Io(format!("locking {}", path.display()), e.into()))
    }

    /// The address held by `owner`, if any.
    pub fn lookup(&self, owner: &str) -> Result<Option<Ipv4Addr>> {
        let _lock = self.lock()?;
        self.find(owner)
    }

    fn find(&self, owner: &str) -> Result<Option<Ipv4Addr>> {
        for (ip, holder) in self.entries()? {
            if holder == owner {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    fn entries(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let read = fs::read_dir(&self.dir)
            .map_err(|e| Error::Io(format!("reading {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let holder = fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((ip, holder.trim().to_string()));
        }
        Ok(out)
    }

    /// Hand `owner` an address (the same one again if it already holds one). Allocation goes
    /// round-robin from the last address handed out, so a released address is not reused at once.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr> {
        let _lock = self.lock()?;
        if let Some(ip) = self.find(owner)? {
            return Ok(ip);
        }
        let last_path = self.dir.join("last_reserved_ip");
        let last = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| self.subnet.contains(*ip));
        let size = self.subnet.size();
        // Usable hosts: 2 ..= size-2 (network, gateway and broadcast excluded).
        if size < 4 {
            return Err(Error::Exhausted(self.subnet));
        }
        let first = 2u64;
        let count = size - 3;
        let start = match last {
            Some(ip) => u64::from(u32::from(ip) - u32::from(self.subnet.network())) + 1,
            None => first,
        };
        for step in 0..count {
            let offset = first + (start.saturating_sub(first) + step) % count;
            let ip = self
                .subnet
                .nth(offset as u32)
                .expect("offset inside the subnet");
            let path = self.dir.join(ip.to_string());
            match File::options().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .map_err(|e| Error::Io(format!("writing {}", path.display()), e))?;
                    let _ = fs::write(&last_path, ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::Io(format!("creating {}", path.display()), e)),
            }
        }
        Err(Error::Exhausted(self.subnet))
    }

    /// Give back `owner`'s address, if it holds one.
    pub fn release(&self, owner: &str) -> Result<()> {
        let lock = self.lock()?;
        if let Some(ip) = self.find(owner)? {
            let path = self.dir.join(ip.to_string());
            fs::remove_file(&path)
                .map_err(|e| Error::Io(format!("removing {}", path.display()), e))?;
        }
        drop(lock);
        Ok(())
    }

    /// All current allocations (address, owner).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let _lock = self.lock()?;
        let mut all = self.entries()?;
        all.sort();
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_for_the_same_owner() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), "10.77.0.0/29".parse().unwrap()).unwrap();
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 77, 0, 3));
        assert_eq!(ipam.allocate("a").unwrap(), a);
        // /29: hosts .2 ..= .6 usable.
        for owner in ["c", "d", "e"] {
            ipam.allocate(owner).unwrap();
        }
        assert!(matches!(ipam.allocate("f"), Err(Error::Exhausted(_))));
        ipam.release("b").unwrap();
        assert_eq!(ipam.allocate("f").unwrap(), b);
        assert_eq!(ipam.lookup("f").unwrap(), Some(b));
        assert_eq!(ipam.allocations().unwrap().len(), 5);
    }
}
