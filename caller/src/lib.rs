//! A SIPREC client: places test calls against a recorder, one or many.
