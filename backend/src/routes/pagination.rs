//! List paging shared by every `/v1` and `/admin` list: `limit` (1 to 200, default 50) and an
//! opaque `cursor`, which is the last id of the previous page (ids are time-ordered).

use serde::Deserialize;
use utoipa::IntoParams;

use crate::{db::Page, error::ApiError};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// `limit` of a list: 1 to 200, default 50.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit: between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// `cursor` of a list: empty or absent for the first page, else a `next_cursor` this list gave,
/// which is an id with the list's `prefix` (`msg`, `con`, `whk`, ...). Anything else is 400
/// `invalid_cursor`: compared as text against ids, a mistyped cursor would otherwise answer a
/// silently empty (or restarted) page, and a client paging through would stop early.
pub fn page_cursor(cursor: Option<String>, prefix: &str) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let ulid = cursor
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'));
    let valid = ulid.is_some_and(|u| {
        u.len() == 26
            && u.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    });
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "cursor: pass the `next_cursor` of the previous page unchanged",
        ));
    }
    Ok(Some(cursor))
}

/// The query of a list that takes nothing but paging (`/v1` and `/admin` alike).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for, checked; `prefix` is the listed ids' (`tpl`, `flw`, ...).
    pub fn page(self, prefix: &str) -> Result<Page, ApiError> {
        Ok(Page {
            limit: page_limit(self.limit)?,
            cursor: page_cursor(self.cursor, prefix)?,
        })
    }
}
