-- Reason codes in one language (English, upper case, as the public contracts): the codes
-- notify recorded before keep their meaning under their new names.
UPDATE messages SET error_code = CASE error_code
    WHEN 'NOMOR_TIDAK_VALID'   THEN 'PHONE_INVALID'
    WHEN 'NOMOR_BUKAN_SELULER' THEN 'PHONE_NOT_MOBILE'
    WHEN 'NOMOR_LUAR_NEGERI'   THEN 'PHONE_NOT_INDONESIAN'
    WHEN 'DITOLAK_PROVIDER'    THEN 'PROVIDER_REFUSED'
    WHEN 'BATAS_PERCOBAAN'     THEN 'RETRIES_EXHAUSTED'
    ELSE error_code END
WHERE error_code IN ('NOMOR_TIDAK_VALID', 'NOMOR_BUKAN_SELULER', 'NOMOR_LUAR_NEGERI',
                     'DITOLAK_PROVIDER', 'BATAS_PERCOBAAN');
