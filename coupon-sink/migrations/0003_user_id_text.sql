-- User ids are opaque strings (identity providers' subjects such as `auth0|5f3a9c`), of 1 to 64
-- ASCII characters; numeric ids keep their decimal form, so existing rows convert in place and
-- keep their meaning. Binary collation: `Alice` and `alice` are different users.
ALTER TABLE coupon MODIFY user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
