//! The resource arguments kubectl accepts: `TYPE`, `TYPE NAME...`, `TYPE1,TYPE2 [NAME...]` and
//! `TYPE/NAME...`.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ArgsError {
    #[error("you must specify the type of resource to {0} (kctl api-resources lists them)")]
    Empty(&'static str),
    #[error(
        "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kctl get resource/<resource_name>' instead of 'kctl get resource resource/<resource_name>'"
    )]
    Mixed,
    #[error("arguments in resource/name form must have a single resource and name")]
    BadPair,
    #[error("empty resource type in \"{0}\"")]
    EmptyType(String),
}

/// Resource arguments, taken apart but not yet resolved through discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResourceArgs {
    /// `TYPE[,TYPE...] [NAME...]`: every type, with the same names (none = all objects).
    Types {
        types: Vec<String>,
        names: Vec<String>,
    },
    /// `TYPE/NAME...`: each name with its own type.
    Pairs(Vec<(String, String)>),
}

impl ResourceArgs {
    /// `verb` completes the error for no arguments ("you must specify the type of resource to get").
    pub(crate) fn parse(args: &[String], verb: &'static str) -> Result<ResourceArgs, ArgsError> {
        let Some(first) = args.first() else {
            return Err(ArgsError::Empty(verb));
        };
        if args.iter().any(|a| a.contains('/')) {
            if !args.iter().all(|a| a.contains('/')) {
                return Err(ArgsError::Mixed);
            }
            let pairs = args
                .iter()
                .map(|a| match a.split_once('/') {
                    Some((t, n)) if !t.is_empty() && !n.is_empty() && !n.contains('/') => {
                        Ok((t.to_string(), n.to_string()))
                    }
                    _ => Err(ArgsError::BadPair),
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(ResourceArgs::Pairs(pairs));
        }
        let types: Vec<String> = first.split(',').map(str::to_string).collect();
        if types.iter().any(String::is_empty) {
            return Err(ArgsError::EmptyType(first.clone()));
        }
        Ok(ResourceArgs::Types {
            types,
            names: args[1..].to_vec(),
        })
    }

    /// Whether specific objects were named.
    pub(crate) fn has_names(&self) -> bool {
        match self {
            ResourceArgs::Types { names, .. } => !names.is_empty(),
            ResourceArgs::Pairs(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn forms() {
        assert_eq!(
            ResourceArgs::parse(&args(&["pods"]), "get"),
            Ok(ResourceArgs::Types {
                types: args(&["pods"]),
                names: vec![]
            })
        );
        assert_eq!(
            ResourceArgs::parse(&args(&["po,svc", "a", "b"]), "get"),
            Ok(ResourceArgs::Types {
                types: args(&["po", "svc"]),
                names: args(&["a", "b"])
            })
        );
        assert_eq!(
            ResourceArgs::parse(&args(&["pod/a", "deploy/b"]), "get"),
            Ok(ResourceArgs::Pairs(vec![
                ("pod".into(), "a".into()),
                ("deploy".into(), "b".into())
            ]))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            ResourceArgs::parse(&[], "get").unwrap_err().to_string(),
            "you must specify the type of resource to get (kctl api-resources lists them)"
        );
        assert_eq!(
            ResourceArgs::parse(&args(&["pods", "pod/a"]), "get"),
            Err(ArgsError::Mixed)
        );
        assert_eq!(
            ResourceArgs::parse(&args(&["pod/"]), "get"),
            Err(ArgsError::BadPair)
        );
        assert_eq!(
            ResourceArgs::parse(&args(&["pod/a/b"]), "get"),
            Err(ArgsError::BadPair)
        );
        assert_eq!(
            ResourceArgs::parse(&args(&["pods,"]), "get"),
            Err(ArgsError::EmptyType("pods,".into()))
        );
    }
}
