{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "remora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every resource name. Truncated to 52 characters so that suffixed names
("-sidecar-injector", "-self-managed-tls") stay within 63.
*/}}
{{- define "remora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "remora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable across upgrades.
*/}}
{{- define "remora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "remora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sidecar-injector
{{- end }}

{{/*
Common labels of every object.
*/}}
{{- define "remora.labels" -}}
helm.sh/chart: {{ include "remora.chart" . }}
{{ include "remora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: remora
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "remora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "remora.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Injector image reference: digest wins over tag; the tag defaults to the appVersion.
*/}}
{{- define "remora.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The revision served, as in istio.io/rev labels: empty means "default".
*/}}
{{- define "remora.revision" -}}
{{- default "default" .Values.revision }}
{{- end }}

{{/*
Whether this injector serves the default revision (gets Istio's istio-injection=enabled and
sidecar.istio.io/inject=true webhooks).
*/}}
{{- define "remora.isDefaultRevision" -}}
{{- if eq (include "remora.revision" .) "default" }}true{{- end }}
{{- end }}

{{/*
Name of the MutatingWebhookConfiguration (cluster-scoped: unique per release).
*/}}
{{- define "remora.webhookConfigName" -}}
{{- printf "%s-sidecar-injector" (include "remora.fullname" .) }}
{{- end }}

{{/*
Name of the webhook Service (also the serving certificate's DNS name).
*/}}
{{- define "remora.serviceName" -}}
{{- include "remora.fullname" . }}
{{- end }}

{{/*
Secret holding the serving certificate: cert-manager's target in cert-manager mode, the injector's
own CA + serving certificate in self-managed mode.
*/}}
{{- define "remora.certSecretName" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-tls" (include "remora.fullname" .) }}
{{- else }}
{{- printf "%s-self-managed-tls" (include "remora.fullname" .) }}
{{- end }}
{{- end }}

{{/*
cert-manager object names.
*/}}
{{- define "remora.servingCertName" -}}
{{- printf "%s-serving" (include "remora.fullname" .) }}
{{- end }}
{{- define "remora.selfSignedIssuerName" -}}
{{- printf "%s-selfsigned" (include "remora.fullname" .) }}
{{- end }}
{{- define "remora.caName" -}}
{{- printf "%s-ca" (include "remora.fullname" .) }}
{{- end }}

{{/*
Namespaces no webhook ever selects.
*/}}
{{- define "remora.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace }}
{{- range .Values.webhook.excludedNamespaces }}
{{- if not (has . $ns) }}
{{- $ns = append $ns . }}
{{- end }}
{{- end }}
{{- toJson $ns }}
{{- end }}

{{/*
The effective reinvocationPolicy: Istio's sidecarInjectorWebhook.reinvocationPolicy wins when set.
*/}}
{{- define "remora.reinvocationPolicy" -}}
{{- default .Values.webhook.reinvocationPolicy .Values.sidecarInjectorWebhook.reinvocationPolicy }}
{{- end }}

{{/*
One webhook of the MutatingWebhookConfiguration, without its selectors. Takes a dict with root
(the chart context) and prefix (Istio's webhook name prefix).
*/}}
{{- define "remora.webhook" }}
{{- $root := .root }}
  - name: {{ .prefix }}sidecar-injector.remora.io
    clientConfig:
      service:
        name: {{ include "remora.serviceName" $root }}
        namespace: {{ $root.Release.Namespace }}
        path: /inject
        port: 443
      {{- /* caBundle is left out: cert-manager's cainjector or the injector (self-managed) sets it, and helm upgrades keep it. */}}
    rules:
      - operations: ["CREATE"]
        apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["pods"]
        scope: Namespaced
    sideEffects: None
    admissionReviewVersions: ["v1"]
    failurePolicy: {{ $root.Values.webhook.failurePolicy }}
    timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
    reinvocationPolicy: {{ include "remora.reinvocationPolicy" $root }}
    matchPolicy: Equivalent
{{- end }}

{{/*
The namespaceSelector expression shared by every webhook: never the system namespaces, the release
namespace or webhook.excludedNamespaces. Takes a dict with excluded (the list).
*/}}
{{- define "remora.webhook.excludeNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: {{ toJson .excluded }}
{{- end }}

{{/*
Features that need RBAC (README.md, RBAC): each is "true" or "".
leaderElection: only the companion controller needs a leader.
restarts: the companion controller may patch workloads.
*/}}
{{- define "remora.leaderElection" -}}
{{- if and .Values.leaderElection.enabled .Values.upgradeController.enabled }}true{{ end }}
{{- end }}

{{- define "remora.restarts" -}}
{{- if and .Values.upgradeController.enabled .Values.restartOutdated.enabled }}true{{ end }}
{{- end }}

{{/*
Name of the metrics port: https-metrics, or http-metrics with metrics.secure false.
*/}}
{{- define "remora.metricsPortName" -}}
{{- if .Values.metrics.secure }}https-metrics{{ else }}http-metrics{{ end }}
{{- end }}

{{/*
Labels of the uninstall hook's objects: not the injector's selector labels, so its pod is never
taken for a replica (Service, PDB, NetworkPolicy).
*/}}
{{- define "remora.cleanupLabels" -}}
helm.sh/chart: {{ include "remora.chart" . }}
app.kubernetes.io/name: {{ include "remora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: uninstall-cleanup
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: remora
{{- end }}

{{/*
Annotations of an uninstall hook object; the argument is its weight (its objects before the Job).
*/}}
{{- define "remora.cleanupHook" -}}
helm.sh/hook: post-delete
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
