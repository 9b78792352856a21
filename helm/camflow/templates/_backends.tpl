{{/* Kafka client security and the S3 CA bundle (docs/security.md "Kafka and S3"): files from a
Secret mounted read-only, their paths and the settings in CAMFLOW_KAFKA_* / CAMFLOW_S3_CA_FILE.
Nothing secret is passed as a flag or an env value. */}}

{{/* The Kafka files that are used, as a dict file -> key in the Secret (ca, cert, key, password):
with existingSecret those whose key name is set, else those given inline (under fixed key names). */}}
{{- define "camflow.kafkaFiles" -}}
{{- $sec := .Values.kafka.security -}}
{{- $tls := has $sec.protocol (list "SSL" "SASL_SSL") -}}
{{- $sasl := has $sec.protocol (list "SASL_SSL" "SASL_PLAINTEXT") -}}
{{- $fixed := dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key" "password" "password" -}}
{{- $files := dict -}}
{{- range $file := list "ca" "cert" "key" "password" -}}
{{- $key := ternary (index $sec.keys $file) (index $fixed $file) (not (empty $sec.existingSecret)) -}}
{{- $given := ternary (index $sec.keys $file) (index $sec $file) (not (empty $sec.existingSecret)) -}}
{{- if and (ternary $sasl $tls (eq $file "password")) $given -}}
{{- $_ := set $files $file $key -}}
{{- end -}}
{{- end -}}
{{- toJson $files -}}
{{- end -}}

{{- define "camflow.kafkaSecretName" -}}
{{- default (printf "%s-kafka-client" (include "camflow.fullname" .)) .Values.kafka.security.existingSecret -}}
{{- end -}}

{{- define "camflow.s3CaSecretName" -}}
{{- default (printf "%s-s3-ca" (include "camflow.fullname" .)) .Values.s3.tls.existingSecret -}}
{{- end -}}

{{/* Whether the S3 CA bundle is mounted: a Secret named or a bundle given, and a key to find it. */}}
{{- define "camflow.s3Ca" -}}
{{- if and .Values.s3.tls.caKey (or .Values.s3.tls.existingSecret .Values.s3.tls.ca) -}}
{{- if not (hasPrefix "https://" .Values.s3.endpoint) -}}
{{- fail (printf "s3.tls: a CA bundle is set but s3.endpoint %q is not https://" .Values.s3.endpoint) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* Checks of kafka.security; renders nothing. */}}
{{- define "camflow.kafkaSecurityChecks" -}}
{{- $sec := .Values.kafka.security -}}
{{- if not (has $sec.protocol (list "PLAINTEXT" "SSL" "SASL_SSL" "SASL_PLAINTEXT")) -}}
{{- fail (printf "kafka.security.protocol %q: expected PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT" $sec.protocol) -}}
{{- end -}}
{{- $files := include "camflow.kafkaFiles" . | fromJson -}}
{{- if hasPrefix "SASL_" $sec.protocol -}}
{{- if not $sec.username -}}
{{- fail (printf "kafka.security.protocol %s needs kafka.security.username" $sec.protocol) -}}
{{- end -}}
{{- if not (hasKey $files "password") -}}
{{- fail (printf "kafka.security.protocol %s needs the password: kafka.security.existingSecret (key keys.password) or kafka.security.password" $sec.protocol) -}}
{{- end -}}
{{- end -}}
{{- if ne (hasKey $files "cert") (hasKey $files "key") -}}
{{- fail "kafka.security: mutual TLS needs both the client certificate (cert) and its key (key)" -}}
{{- end -}}
{{- end -}}

{{/* Env entries. Call with (dict "root" $ "s3" true|false). */}}
{{- define "camflow.backendEnv" -}}
{{- include "camflow.kafkaSecurityChecks" .root -}}
{{- $sec := .root.Values.kafka.security -}}
{{- $files := include "camflow.kafkaFiles" .root | fromJson }}
- name: CAMFLOW_KAFKA_SECURITY_PROTOCOL
  value: {{ $sec.protocol | quote }}
{{- if has $sec.protocol (list "SSL" "SASL_SSL") }}
- name: CAMFLOW_KAFKA_CHECK_HOSTNAME
  value: {{ ternary "true" "false" $sec.checkHostname | quote }}
{{- end }}
{{- if hasKey $files "ca" }}
- name: CAMFLOW_KAFKA_CA_FILE
  value: /var/run/secrets/camflow/kafka/ca.crt
{{- end }}
{{- if hasKey $files "cert" }}
- name: CAMFLOW_KAFKA_CERT_FILE
  value: /var/run/secrets/camflow/kafka/client.crt
- name: CAMFLOW_KAFKA_KEY_FILE
  value: /var/run/secrets/camflow/kafka/client.key
{{- end }}
{{- if hasPrefix "SASL_" $sec.protocol }}
- name: CAMFLOW_KAFKA_SASL_MECHANISM
  value: {{ $sec.saslMechanism | quote }}
- name: CAMFLOW_KAFKA_USERNAME
  value: {{ $sec.username | quote }}
- name: CAMFLOW_KAFKA_PASSWORD_FILE
  value: /var/run/secrets/camflow/kafka/password
{{- end }}
{{- if and .s3 (include "camflow.s3Ca" .root) }}
- name: CAMFLOW_S3_CA_FILE
  value: /var/run/secrets/camflow/s3/ca.crt
{{- end }}
{{- end -}}

{{/* volumeMounts entries. Call with (dict "root" $ "s3" true|false). */}}
{{- define "camflow.backendMounts" -}}
{{- $files := include "camflow.kafkaFiles" .root | fromJson -}}
{{- if $files }}
- name: kafka-client
  mountPath: /var/run/secrets/camflow/kafka
  readOnly: true
{{- end }}
{{- if and .s3 (include "camflow.s3Ca" .root) }}
- name: s3-ca
  mountPath: /var/run/secrets/camflow/s3
  readOnly: true
{{- end }}
{{- end -}}

{{/* volumes entries (Secret files readable by the pod's user and fsGroup only). Call with (dict "root" $ "s3" true|false). */}}
{{- define "camflow.backendVolumes" -}}
{{- $files := include "camflow.kafkaFiles" .root | fromJson -}}
{{- $paths := dict "ca" "ca.crt" "cert" "client.crt" "key" "client.key" "password" "password" -}}
{{- if $files }}
- name: kafka-client
  secret:
    secretName: {{ include "camflow.kafkaSecretName" .root }}
    defaultMode: 0440
    items:
      {{- range $file := list "ca" "cert" "key" "password" }}
      {{- if hasKey $files $file }}
      - key: {{ index $files $file | quote }}
        path: {{ index $paths $file }}
      {{- end }}
      {{- end }}
{{- end }}
{{- if and .s3 (include "camflow.s3Ca" .root) }}
- name: s3-ca
  secret:
    secretName: {{ include "camflow.s3CaSecretName" .root }}
    defaultMode: 0440
    items:
      - key: {{ .root.Values.s3.tls.caKey | quote }}
        path: ca.crt
{{- end }}
{{- end -}}
