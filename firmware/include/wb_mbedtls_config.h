/*
 * mbedTLS 3.6 configuration for the wasmbed device link: a TLS client only, TLS 1.3 preferred with
 * TLS 1.2 as fallback, ECDHE on P-256 with ECDSA P-256 certificates, AES-128-GCM + SHA-256. Plus
 * what enrollment needs on the device: P-256 key generation, PKCS#10 CSR writing, DER key I/O.
 * Everything else is off, to keep flash and RAM within the tls-link profile.
 */
#ifndef WB_MBEDTLS_CONFIG_H
#define WB_MBEDTLS_CONFIG_H

/* Platform: bare metal. Randomness comes from our DRBG (link_rng.c), fed by the seed the
 * supervisor injects at every boot; mbedTLS gathers no entropy of its own. */
#define MBEDTLS_PLATFORM_C
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_NO_PLATFORM_ENTROPY
#define MBEDTLS_PSA_CRYPTO_EXTERNAL_RNG
#define MBEDTLS_DEPRECATED_REMOVED

/* Symmetric crypto and hashes */
#define MBEDTLS_AES_C
#define MBEDTLS_AES_ROM_TABLES
#define MBEDTLS_AES_FEWER_TABLES
#define MBEDTLS_CIPHER_C
#define MBEDTLS_GCM_C
#define MBEDTLS_MD_C
#define MBEDTLS_SHA224_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA256_SMALLER
#define MBEDTLS_CTR_DRBG_C
#define MBEDTLS_HKDF_C /* TLS 1.3 key schedule (PSA HKDF) */

/* Public key: P-256 only */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_ECP_C
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_NIST_OPTIM
#define MBEDTLS_ECP_WINDOW_SIZE 2
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 0
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ECDH_C
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_OID_C
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C

/* Certificates: parse the gateway's chain, write our CSR */
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C
#define MBEDTLS_X509_CREATE_C
#define MBEDTLS_X509_CSR_WRITE_C
#define MBEDTLS_X509_MAX_INTERMEDIATE_CA 2

/* PSA Crypto: required by TLS 1.3; volatile keys only, few slots. */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_USE_PSA_CRYPTO
#define MBEDTLS_PSA_KEY_SLOT_COUNT 8

/* TLS client */
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_CLI_C
#define MBEDTLS_SSL_PROTO_TLS1_3
#define MBEDTLS_SSL_PROTO_TLS1_2
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE
#define MBEDTLS_SSL_SERVER_NAME_INDICATION
#define MBEDTLS_SSL_ENCRYPT_THEN_MAC
#define MBEDTLS_SSL_EXTENDED_MASTER_SECRET
/* Records: 4 KiB each way. The gateway never sends a larger record: it writes one protocol frame
 * per record and frames are bounded by the size negotiated in the hello (2 KiB). (TLS 1.3 has no
 * max_fragment_length, and OpenSSL does not implement record_size_limit, so this is protocol-level.) */
#define MBEDTLS_SSL_IN_CONTENT_LEN 4096
#define MBEDTLS_SSL_OUT_CONTENT_LEN 4096

#endif
