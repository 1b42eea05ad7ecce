//! uid/gid mapping between what callers see and what the layers store, as
//! fuse-overlayfs's `uidmapping=`/`gidmapping=`: triples of
//! `inside:outside:count`, colon-separated (a leading colon is allowed, as
//! containers/storage sends it). Files stored with an outside id show the
//! inside id; ids a caller sets are stored as outside ids. Unmapped ids show
//! as the overflow id 65534 (nobody), as in a user namespace.

/// The id shown for a stored id that no range covers.
pub const OVERFLOW_ID: u32 = 65534;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<(u32, u32, u32)>,
}

impl IdMap {
    /// Parses `inside:outside:count[:inside:outside:count...]`.
    pub fn parse(s: &str) -> Result<IdMap, String> {
        let nums: Vec<u32> = s
            .split(':')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u32>()
                    .map_err(|_| format!("bad id mapping '{s}': '{p}' is not a number"))
            })
            .collect::<Result<_, _>>()?;
        if nums.is_empty() || nums.len() % 3 != 0 {
            return Err(format!(
                "bad id mapping '{s}': expected inside:outside:count triples"
            ));
        }
        let ranges: Vec<(u32, u32, u32)> = nums.chunks(3).map(|c| (c[0], c[1], c[2])).collect();
        for (i, o, n) in &ranges {
            if *n == 0 || i.checked_add(*n - 1).is_none() || o.checked_add(*n - 1).is_none() {
                return Err(format!(
                    "bad id mapping '{s}': range {i}:{o}:{n} is empty or overflows"
                ));
            }
        }
        Ok(IdMap { ranges })
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The stored (outside) id for an id a caller uses.
    pub fn to_outside(&self, id: u32) -> u32 {
        if self.is_identity() {
            return id;
        }
        self.ranges
            .iter()
            .find(|(i, _, n)| id >= *i && id - *i < *n)
            .map(|(i, o, _)| o + (id - i))
            .unwrap_or(OVERFLOW_ID)
    }

    /// The id callers see for a stored (outside) id.
    pub fn to_inside(&self, id: u32) -> u32 {
        if self.is_identity() {
            return id;
        }
        self.ranges
            .iter()
            .find(|(_, o, n)| id >= *o && id - *o < *n)
            .map(|(i, o, _)| i + (id - o))
            .unwrap_or(OVERFLOW_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_and_accepts_a_leading_colon() {
        let m = IdMap::parse(":0:1000:1:1:100000:65536").unwrap_or_default();
        assert_eq!(m.to_outside(0), 1000);
        assert_eq!(m.to_outside(5), 100004);
        assert_eq!(m.to_inside(1000), 0);
        assert_eq!(m.to_inside(100004), 5);
        assert_eq!(m.to_inside(7), OVERFLOW_ID);
        assert!(IdMap::parse("0:1").is_err());
        assert!(IdMap::parse("0:x:1").is_err());
        assert!(IdMap::default().is_identity());
    }
}
