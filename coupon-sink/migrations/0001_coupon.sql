-- Coupons: one row per admitted user. The two unique keys are the database's own guarantee:
-- with seq in 1..=quota from the gate, the table can never hold more rows than the quota for a
-- campaign, nor two for one user, even if Redis forgot its state.
CREATE TABLE IF NOT EXISTS coupon (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    campaign_id VARCHAR(64)     NOT NULL,
    user_id     BIGINT          NOT NULL,
    seq         INT UNSIGNED    NOT NULL,
    admitted_at DATETIME(3)     NOT NULL,
    created_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY uq_coupon_user (campaign_id, user_id),
    UNIQUE KEY uq_coupon_seq (campaign_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
