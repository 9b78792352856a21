{{/* Names and labels. */}}
{{- define "camflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "camflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every resource; call with (dict "root" $ "component" "ingest"). */}}
{{- define "camflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "camflow.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "camflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "camflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "camflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "camflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "camflow.secretName" -}}
{{- default (include "camflow.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "camflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* --s3 URL: endpoint/bucket[/prefix]. */}}
{{- define "camflow.s3url" -}}
{{- $base := printf "%s/%s" (trimSuffix "/" (required "s3.endpoint is required" .Values.s3.endpoint)) (required "s3.bucket is required" .Values.s3.bucket) -}}
{{- if .Values.s3.prefix -}}
{{- printf "%s/%s" $base (trimAll "/" .Values.s3.prefix) -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{/* Flags every service takes: listen address, log level. */}}
{{- define "camflow.commonArgs" -}}
- --host
- 0.0.0.0
- --log-level
- {{ .Values.config.logLevel | quote }}
{{- end -}}

{{/* --kafka, --kafka-prefix and --kafka-replication. */}}
{{- define "camflow.kafkaArgs" -}}
{{- if lt (int .Values.kafka.replication) 1 }}
{{- fail (printf "kafka.replication %v: must be 1 or more brokers" .Values.kafka.replication) }}
{{- end }}
- --kafka
- {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
{{- if .Values.kafka.topicPrefix }}
- --kafka-prefix
- {{ .Values.kafka.topicPrefix | quote }}
{{- end }}
- --kafka-replication
- {{ int .Values.kafka.replication | quote }}
{{- end -}}

{{/* --tls-cert and --tls-key of the mounted tls.secretName (nothing without it). */}}
{{- define "camflow.tlsArgs" -}}
{{- if .Values.tls.secretName }}
- --tls-cert
- /etc/camflow-tls/tls.crt
- --tls-key
- /etc/camflow-tls/tls.key
{{- end }}
{{- end -}}

{{/* The volume mount of tls.secretName (in a container's volumeMounts). */}}
{{- define "camflow.tlsVolumeMount" -}}
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: /etc/camflow-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The volume of tls.secretName (in a pod's volumes); readable by the pod's group (fsGroup) only. */}}
{{- define "camflow.tlsVolume" -}}
{{- if .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* /metrics, /healthz and /readyz on the metrics port, on every address of the pod (camflow's
default is loopback) so that Prometheus and the kubelet's probes reach it; no public Service
exposes it. */}}
{{- define "camflow.metricsArgs" -}}
- --metrics-port
- {{ .Values.metrics.port | quote }}
- --metrics-host
- 0.0.0.0
{{- end -}}

{{/* The token signing keys: the Secret's key secret.keys.tokenSecret mounted as a file (a whole
directory, not a subPath, so the kubelet updates it when the Secret changes; every service re-reads
it within 2 s: rotation needs no restart). CAMFLOW_SECRET_FILE names it (camflow.env). */}}
{{- define "camflow.keysFile" -}}
/var/run/secrets/camflow/token-keys/keys
{{- end -}}

{{- define "camflow.keysMount" -}}
- name: token-keys
  mountPath: /var/run/secrets/camflow/token-keys
  readOnly: true
{{- end -}}

{{- define "camflow.keysVolume" -}}
- name: token-keys
  secret:
    secretName: {{ include "camflow.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secret.keys.tokenSecret | quote }}
        path: keys
{{- end -}}

{{/* Environment: the token keys file, S3 credentials and region (AWS_REGION; CAMFLOW_REGION with
region.name, read by the packager and the edge). Call with (dict "root" $ "s3" true). */}}
{{- define "camflow.env" -}}
- name: CAMFLOW_SECRET_FILE
  value: {{ include "camflow.keysFile" .root | quote }}
{{- if .s3 }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "camflow.secretName" .root }}
      key: {{ .root.Values.secret.keys.s3AccessKey }}
      optional: true
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "camflow.secretName" .root }}
      key: {{ .root.Values.secret.keys.s3SecretKey }}
      optional: true
- name: AWS_REGION
  value: {{ .root.Values.s3.region | quote }}
{{- end }}
{{- with .root.Values.region }}
{{- if .name }}
- name: CAMFLOW_REGION
  value: {{ .name | quote }}
- name: CAMFLOW_REGION_EDGE_URL
  value: {{ required "region.edgeUrl: the URL of this region's edge is required with region.name" .edgeUrl | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Liveness, readiness and start-up probes on a named port. Call with (dict "root" $ "port" "metrics"),
plus "scheme" "HTTPS" for a TLS port (the kubelet does not check the certificate). */}}
{{- define "camflow.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    {{- with .scheme }}
    scheme: {{ . }}
    {{- end }}
  periodSeconds: 5
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ div $p.startupSeconds 5 | max 1 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    {{- with .scheme }}
    scheme: {{ . }}
    {{- end }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.livenessFailureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
    {{- with .scheme }}
    scheme: {{ . }}
    {{- end }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.readinessFailureThreshold }}
{{- end -}}

{{/* Pod-level settings shared by every Deployment. Call with (dict "root" $ "svc" .Values.ingest). */}}
{{- define "camflow.podCommon" -}}
serviceAccountName: {{ include "camflow.serviceAccountName" .root }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .svc.terminationGracePeriodSeconds }}
{{- with .svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod template annotations: a config checksum (rolls pods when the ConfigMap changes) and the user's. */}}
{{- define "camflow.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- with .svc.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget for a service's pods, when its podDisruptionBudget.enabled; call with
(dict "root" $ "component" "edge" "svc" .Values.edge). Node drains then take at most
maxUnavailable of its pods at a time. */}}
{{- define "camflow.pdb" -}}
{{- if .svc.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "camflow.fullname" .root }}-{{ .component }}
  labels:
    {{- include "camflow.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .svc.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "camflow.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}
